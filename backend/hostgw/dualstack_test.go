package hostgw

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/netagent/netagent/backend"
	"github.com/netagent/netagent/backend/backendtest"
	"github.com/netagent/netagent/internal/await"
	"github.com/netagent/netagent/internal/nstest"
	"github.com/netagent/netagent/lease"
)

func TestDualStackRoutes(t *testing.T) {
	a, _ := nstest.Underlay(t)
	a.AddrAdd(t, "eth0", "192.168.77.1/24", "fd77::1/64")
	a.IP(t, "-6", "route", "add", "fc00:0:0:99::/64", "via", "fd77::99", "proto", "78") // stale, ours
	ext := backendtest.Ext(t, a, "eth0", netip.MustParseAddr("192.168.77.1"), netip.MustParseAddr("fd77::1"))
	cfg := &lease.Config{EnableIPv4: true, EnableIPv6: true, BackendType: Type}

	bk, err := New(backend.Options{Handle: a.Handle, Netns: a.Netns, Ext: ext, Config: cfg, ResyncInterval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	if d, err := bk.BackendV6Data(); d != nil || err != nil {
		t.Errorf("BackendV6Data = %s, %v; want nil", d, err)
	}
	updates, _ := backendtest.Start(t, bk)

	own := dualLease("10.5.1.0/24", "192.168.77.1", "fc00:0:0:1::/64", "fd77::1")
	updates <- backend.Update{Own: &own, Batch: &lease.Batch{Snapshot: true, Events: []lease.Event{
		{Lease: own},
		{Lease: dualLease("10.5.2.0/24", "192.168.77.2", "fc00:0:0:2::/64", "fd77::2")},
		{Lease: dualLease("", "", "fc00:0:0:3::/64", "fd88::5")}, // not directly connected
	}}}
	want4 := []string{"10.5.2.0/24 via 192.168.77.2 dev eth0"}
	want6 := []string{"fc00:0:0:2::/64 via fd77::2 dev eth0"}
	await.Eventually(t, settle, "the reachable peers' routes", routesAre(a, want4, want6))
	await.Eventually(t, settle, "status: the unreachable IPv6 peer not programmed", func() error {
		st := bk.Status()
		if len(st.Peers) != 3 || st.LastPass.IsZero() {
			return fmt.Errorf("status %+v", st)
		}
		if p := st.Peers[2]; p.Programmed || !strings.Contains(p.LastError, "fd88::5") || !st.Peers[1].Programmed {
			return fmt.Errorf("status peers %+v", st.Peers)
		}
		return nil
	})

	// Repair: a deleted IPv6 route is back.
	a.IP(t, "-6", "route", "del", "fc00:0:0:2::/64")
	await.Eventually(t, settle, "the deleted IPv6 route repaired", routesAre(a, want4, want6))

	// The unreachable IPv6 peer becomes reachable when ext gets an
	// address on its subnet.
	a.AddrAdd(t, "eth0", "fd88::1/64")
	want6 = append(want6, "fc00:0:0:3::/64 via fd88::5 dev eth0")
	await.Eventually(t, settle, "the IPv6 peer's route once reachable", routesAre(a, want4, want6))

	// A removed dual-stack lease takes both routes along.
	updates <- backend.Update{Batch: &lease.Batch{Events: []lease.Event{{Type: lease.EventRemoved,
		Lease: dualLease("10.5.2.0/24", "192.168.77.2", "fc00:0:0:2::/64", "fd77::2")}}}}
	await.Eventually(t, settle, "both routes of the removed lease gone", routesAre(a, nil, want6[1:]))
}

func TestNewIPv6Checks(t *testing.T) {
	a, _ := nstest.Underlay(t)
	a.AddrAdd(t, "eth0", "fd77::1/64")
	ext := backendtest.Ext(t, a, "eth0") // neither family's address given yet
	cfg := &lease.Config{EnableIPv6: true, BackendType: Type}

	if _, err := New(backend.Options{Handle: a.Handle, Ext: ext, Config: cfg}); err == nil || !strings.Contains(err.Error(), "no public IPv6 address") {
		t.Errorf("New without an IPv6 address: %v", err)
	}
	ext.AddrV6, ext.PublicIPv6 = netip.MustParseAddr("fd77::1"), netip.MustParseAddr("2001:db8::7")
	if _, err := New(backend.Options{Handle: a.Handle, Ext: ext, Config: cfg}); !errors.Is(err, ErrPublicIPNotLocal) {
		t.Errorf("New with a NATed public IPv6: %v", err)
	}
	ext.PublicIPv6 = ext.AddrV6
	if _, err := New(backend.Options{Handle: a.Handle, Ext: ext, Config: cfg}); err != nil {
		t.Errorf("New IPv6-only: %v", err)
	}
}
