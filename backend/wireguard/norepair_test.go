package wireguard

import (
	"encoding/json"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/netagent/netagent/backend"
	"github.com/netagent/netagent/internal/await"
	"github.com/netagent/netagent/lease"
)

// TestNoRepair: with backend.Options.NoRepair a pass reports what it
// finds wrong on the device and leaves it: B's peer removed behind the
// backend's back stays removed, B is reported not programmed with
// "repair disabled", no repair is counted, a stranger's peer stays; a
// lease event still programs its peer, and the peer put back by hand is
// reported programmed again.
func TestNoRepair(t *testing.T) {
	a, b := pair(t, `{"Type":"wireguard"}`, time.Hour)
	a.stop()
	a.noRepair = true
	a.start(t, `{"Type":"wireguard"}`, time.Second)
	a.updates <- backend.Update{Own: a.lease(), Batch: snapshot(b.lease())}
	a.waitPeers(t, "B on A's device", b.peerLine())
	await.Eventually(t, wait, "B reachable from A", func() error { return a.ping(b.overlay()) })

	bKey, _ := wgtypes.ParseKey(b.b.PublicKey())
	a.configure(t, wgtypes.Config{Peers: []wgtypes.PeerConfig{{PublicKey: bKey, Remove: true}}})
	stranger, _ := wgtypes.GeneratePrivateKey()
	a.configure(t, wgtypes.Config{Peers: []wgtypes.PeerConfig{{PublicKey: stranger.PublicKey()}}})
	strangerLine := stranger.PublicKey().String() + " "
	await.Eventually(t, wait, "B reported not programmed on A, repair disabled", func() error {
		return a.peerState(b.subnet, false, "repair disabled: would add peer")
	})
	// Two passes more: the drift has been seen by a full pass after the
	// one that reported it, and left.
	a.waitPasses(t, 2)
	if got := a.peers(t); !slices.Equal(got, []string{strangerLine}) {
		t.Errorf("A's peers %q: want the stranger alone (B left removed, the stranger left)", got)
	}
	if n := a.repairs("peer"); n != 0 {
		t.Errorf("peer repairs on A %d with repair disabled, want 0", n)
	}

	// Put back by hand as the backend would: reported programmed again.
	a.configure(t, wgtypes.Config{Peers: []wgtypes.PeerConfig{{
		PublicKey: bKey, Endpoint: net.UDPAddrFromAddrPort(netip.AddrPortFrom(b.pub, 51820)),
		ReplaceAllowedIPs: true, AllowedIPs: []net.IPNet{prefixIPNet(b.subnet)},
	}}})
	await.Eventually(t, wait, "B reported programmed on A after the hand repair", func() error {
		return a.peerState(b.subnet, true, "")
	})

	// A lease event still programs its peer: B re-keyed.
	newKey, _ := wgtypes.GeneratePrivateKey()
	rekeyed := b.lease()
	rekeyed.Attrs.BackendData, _ = json.Marshal(PeerData{PublicKey: newKey.PublicKey(), Port: 51820})
	a.updates <- backend.Update{Batch: event(lease.EventAdded, rekeyed)}
	a.waitPeers(t, "B's new key on A's device", newKey.PublicKey().String()+" 10.5.2.0/24", strangerLine)
}

// peerState reports, as an error, how the status of h's peer of subnet
// differs from programmed with a LastError containing errPart.
func (h *host) peerState(subnet netip.Prefix, programmed bool, errPart string) error {
	for _, p := range h.b.Status().Peers {
		if p.Subnet != subnet {
			continue
		}
		if p.Programmed != programmed || !strings.Contains(p.LastError, errPart) {
			return fmt.Errorf("peer %s: programmed %v, error %q; want programmed %v, error with %q", subnet, p.Programmed, p.LastError, programmed, errPart)
		}
		return nil
	}
	return fmt.Errorf("no peer %s in the status", subnet)
}

// waitPasses waits until h's backend has made n full passes more.
func (h *host) waitPasses(t *testing.T, n uint64) {
	t.Helper()
	from := h.b.Status().Counters.Passes
	await.Eventually(t, wait, fmt.Sprintf("%d passes after pass %d", n, from), await.True(func() bool {
		return h.b.Status().Counters.Passes >= from+n
	}))
}
