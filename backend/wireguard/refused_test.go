package wireguard

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/netagent/netagent/backend"
	"github.com/netagent/netagent/internal/await"
	"github.com/netagent/netagent/lease"
)

// warnCounter is a slog.Handler counting warnings by their "lease" key.
type warnCounter struct {
	mu sync.Mutex
	n  map[string]int
}

func (w *warnCounter) Enabled(_ context.Context, l slog.Level) bool { return l >= slog.LevelWarn }
func (w *warnCounter) WithAttrs([]slog.Attr) slog.Handler           { return w }
func (w *warnCounter) WithGroup(string) slog.Handler                { return w }

func (w *warnCounter) Handle(_ context.Context, r slog.Record) error {
	r.Attrs(func(a slog.Attr) bool {
		if a.Key == "lease" {
			w.mu.Lock()
			w.n[a.Value.String()]++
			w.mu.Unlock()
			return false
		}
		return true
	})
	return nil
}

func (w *warnCounter) count(key string) int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.n[key]
}

// TestRefusedBackendType: leases of hosts of another backend type (their
// traffic would go in clear text, or nowhere) are refused in status with
// the reason backend-type and a detail naming the type, warned about once
// per key, never programmed. A peer whose lease turns to another type is
// removed from the device; removed, a refusal goes.
func TestRefusedBackendType(t *testing.T) {
	a, b := pair(t, `{"Type":"wireguard"}`, time.Hour)
	a.waitPeers(t, "B on A's device", b.peerLine())

	vx := &lease.Lease{Subnet: netip.MustParsePrefix("10.5.8.0/24"), CreateRevision: 1,
		Attrs: lease.LeaseAttrs{PublicIP: netip.MustParseAddr("192.168.77.8"), BackendType: "vxlan",
			BackendData: []byte(`{"VNI":1,"VtepMAC":"02:00:00:00:00:08"}`)}}
	gw := &lease.Lease{Subnet: netip.MustParsePrefix("10.5.9.0/24"), CreateRevision: 1,
		Attrs: lease.LeaseAttrs{PublicIP: netip.MustParseAddr("192.168.77.9"), BackendType: "host-gw"}}
	a.updates <- backend.Update{Batch: event(lease.EventAdded, vx)}
	a.updates <- backend.Update{Batch: event(lease.EventAdded, vx)} // put again, same value
	a.updates <- backend.Update{Batch: event(lease.EventAdded, gw)}

	refusedAre := func(keys ...string) func() error {
		return func() error {
			var got []string
			for _, r := range a.b.Status().Refused {
				if r.Reason != backend.RefusedBackendType || r.Winner != "" || !strings.Contains(r.Detail, "backend type") {
					return fmt.Errorf("refused %+v: want reason %s, no winner, the backend type named", r, backend.RefusedBackendType)
				}
				got = append(got, r.Key)
			}
			slices.Sort(keys)
			if !slices.Equal(got, keys) {
				return fmt.Errorf("refused %q, want %q", got, keys)
			}
			return nil
		}
	}
	await.Eventually(t, wait, "vxlan and host-gw keys refused on A", refusedAre(vx.Key(), gw.Key()))
	for _, k := range []string{vx.Key(), gw.Key()} {
		if n := a.warns.count(k); n != 1 {
			t.Errorf("%d warnings naming %s, want 1", n, k)
		}
	}
	if got := a.peers(t); !slices.Equal(got, []string{b.peerLine()}) {
		t.Errorf("peers %q: want B alone", got)
	}
	if st := a.b.Status(); len(st.Peers) != 1 || st.Peers[0].Key != b.lease().Key() {
		t.Errorf("status peers %+v: want B alone", st.Peers)
	}

	// B's host moves to host-gw: its peer goes, its key is refused.
	bgw := b.lease()
	bgw.Attrs.BackendType, bgw.Attrs.BackendData = "host-gw", nil
	a.updates <- backend.Update{Batch: event(lease.EventAdded, bgw)}
	a.waitPeers(t, "B gone from A's device")
	await.Eventually(t, wait, "B's host-gw key refused on A", refusedAre(vx.Key(), gw.Key(), bgw.Key()))
	if st := a.b.Status(); len(st.Peers) != 0 {
		t.Errorf("status peers %+v: want none", st.Peers)
	}

	// Back to wireguard, and the vxlan lease removed: both no longer refused.
	a.updates <- backend.Update{Batch: event(lease.EventAdded, b.lease())}
	a.updates <- backend.Update{Batch: event(lease.EventRemoved, vx)}
	a.waitPeers(t, "B back on A's device", b.peerLine())
	await.Eventually(t, wait, "only the host-gw key refused on A", refusedAre(gw.Key()))
}
