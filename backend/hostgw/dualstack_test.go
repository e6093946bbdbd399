package hostgw

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/netagent/netagent/backend"
	"github.com/netagent/netagent/backend/backendtest"
	"github.com/netagent/netagent/subnet"
)

func dualLease(sub, pub, sub6, pub6 string) subnet.Lease {
	l := subnet.Lease{Attrs: subnet.LeaseAttrs{BackendType: Type}}
	if sub != "" {
		l.Subnet, l.Attrs.PublicIP = netip.MustParsePrefix(sub), netip.MustParseAddr(pub)
	}
	if sub6 != "" {
		l.IPv6Subnet, l.Attrs.PublicIPv6 = netip.MustParsePrefix(sub6), netip.MustParseAddr(pub6)
	}
	return l
}

func ownRoutesV6(h *netlink.Handle) ([]string, error) {
	routes, err := h.RouteListFiltered(netlink.FAMILY_V6, &netlink.Route{Protocol: backend.RouteProtocol}, netlink.RT_FILTER_PROTOCOL)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, r := range routes {
		out = append(out, fmt.Sprintf("%s via %s dev %d", r.Dst, r.Gw, r.LinkIndex))
	}
	slices.Sort(out)
	return out, nil
}

func TestDualStackRoutes(t *testing.T) {
	a, b := backendtest.NewNS(t, "a"), backendtest.NewNS(t, "b")
	backendtest.Veth(t, a, "eth0", b, "eth0")
	a.IP(t, "addr", "add", "192.168.77.1/24", "dev", "eth0")
	a.IP(t, "addr", "add", "fd77::1/64", "dev", "eth0", "nodad")
	a.IP(t, "-6", "route", "add", "fc00:0:0:99::/64", "via", "fd77::99", "proto", "78") // stale, ours
	ext := a.Ext(t, "eth0", netip.MustParseAddr("192.168.77.1"))
	ext.AddrV6, ext.PublicIPv6 = netip.MustParseAddr("fd77::1"), netip.MustParseAddr("fd77::1")
	cfg := &subnet.Config{EnableIPv4: true, EnableIPv6: true, BackendType: Type}

	bk, err := New(Options{Handle: a.Handle, Netns: a.Netns, Ext: ext, Config: cfg, ResyncInterval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	if d, err := bk.BackendV6Data(); d != nil || err != nil {
		t.Errorf("BackendV6Data = %s, %v; want nil", d, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	updates := make(chan backend.Update, 4)
	wg.Go(func() { _ = bk.Run(ctx, updates) })
	t.Cleanup(func() { cancel(); wg.Wait() })

	own := dualLease("10.5.1.0/24", "192.168.77.1", "fc00:0:0:1::/64", "fd77::1")
	updates <- backend.Update{Own: &own, Batch: &subnet.Batch{Snapshot: true, Events: []subnet.Event{
		{Lease: own},
		{Lease: dualLease("10.5.2.0/24", "192.168.77.2", "fc00:0:0:2::/64", "fd77::2")},
		{Lease: dualLease("", "", "fc00:0:0:3::/64", "fd88::5")}, // not directly connected
	}}}
	check := func(want4, want6 []string) func() error {
		return func() error {
			got4, err := ownRoutes(a.Handle)
			if err != nil {
				return err
			}
			got6, err := ownRoutesV6(a.Handle)
			if err != nil {
				return err
			}
			if !slices.Equal(got4, want4) || !slices.Equal(got6, want6) {
				return fmt.Errorf("routes %q %q, want %q %q", got4, got6, want4, want6)
			}
			return nil
		}
	}
	want4 := []string{fmt.Sprintf("10.5.2.0/24 via 192.168.77.2 dev %d", ext.Index)}
	want6 := []string{fmt.Sprintf("fc00:0:0:2::/64 via fd77::2 dev %d", ext.Index)}
	backendtest.Eventually(t, 5*time.Second, check(want4, want6))
	backendtest.Eventually(t, 2*time.Second, func() error {
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
	backendtest.Eventually(t, 2*time.Second, check(want4, want6))

	// The unreachable IPv6 peer becomes reachable when ext gets an
	// address on its subnet.
	a.IP(t, "addr", "add", "fd88::1/64", "dev", "eth0", "nodad")
	want6 = append(want6, fmt.Sprintf("fc00:0:0:3::/64 via fd88::5 dev %d", ext.Index))
	backendtest.Eventually(t, 2*time.Second, check(want4, want6))

	// A removed dual-stack lease takes both routes along.
	updates <- backend.Update{Batch: &subnet.Batch{Events: []subnet.Event{{Type: subnet.EventRemoved,
		Lease: dualLease("10.5.2.0/24", "192.168.77.2", "fc00:0:0:2::/64", "fd77::2")}}}}
	backendtest.Eventually(t, 2*time.Second, check(nil, want6[1:]))
}

func TestNewIPv6Checks(t *testing.T) {
	a := backendtest.NewNS(t, "a")
	b := backendtest.NewNS(t, "b")
	backendtest.Veth(t, a, "eth0", b, "eth0")
	a.IP(t, "addr", "add", "fd77::1/64", "dev", "eth0", "nodad")
	ext := a.Ext(t, "eth0", netip.Addr{})
	ext.Addr, ext.PublicIP = netip.Addr{}, netip.Addr{}
	cfg := &subnet.Config{EnableIPv6: true, BackendType: Type}

	if _, err := New(Options{Handle: a.Handle, Ext: ext, Config: cfg}); err == nil || !strings.Contains(err.Error(), "no public IPv6 address") {
		t.Errorf("New without an IPv6 address: %v", err)
	}
	ext.AddrV6, ext.PublicIPv6 = netip.MustParseAddr("fd77::1"), netip.MustParseAddr("2001:db8::7")
	if _, err := New(Options{Handle: a.Handle, Ext: ext, Config: cfg}); !errors.Is(err, ErrPublicIPNotLocal) {
		t.Errorf("New with a NATed public IPv6: %v", err)
	}
	ext.PublicIPv6 = ext.AddrV6
	if _, err := New(Options{Handle: a.Handle, Ext: ext, Config: cfg}); err != nil {
		t.Errorf("New IPv6-only: %v", err)
	}
}
