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

func lease(sub, pub string) subnet.Lease {
	return subnet.Lease{Subnet: netip.MustParsePrefix(sub),
		Attrs: subnet.LeaseAttrs{PublicIP: netip.MustParseAddr(pub), BackendType: Type}}
}

func ownRoutes(h *netlink.Handle) ([]string, error) {
	routes, err := h.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Protocol: backend.RouteProtocol}, netlink.RT_FILTER_PROTOCOL)
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

func TestRoutesViaPublicIP(t *testing.T) {
	a, b := backendtest.NewNS(t, "a"), backendtest.NewNS(t, "b")
	backendtest.Veth(t, a, "eth0", b, "eth0")
	a.IP(t, "addr", "add", "192.168.77.1/24", "dev", "eth0")
	a.IP(t, "route", "add", "10.5.99.0/24", "via", "192.168.77.99", "proto", "78") // stale, ours
	ext := a.Ext(t, "eth0", netip.MustParseAddr("192.168.77.1"))

	bk, err := New(Options{Handle: a.Handle, Netns: a.Netns, Ext: ext, Config: &subnet.Config{BackendType: Type}, ResyncInterval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	if bk.MTU() != ext.MTU {
		t.Errorf("MTU %d, want %d", bk.MTU(), ext.MTU)
	}
	if d, err := bk.BackendData(); d != nil || err != nil {
		t.Errorf("BackendData = %s, %v; want nil", d, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	updates := make(chan backend.Update, 4)
	wg.Go(func() { _ = bk.Run(ctx, updates) })
	t.Cleanup(func() { cancel(); wg.Wait() })

	own := lease("10.5.1.0/24", "192.168.77.1")
	updates <- backend.Update{Own: &own, Batch: &subnet.Batch{Snapshot: true, Events: []subnet.Event{
		{Lease: own},
		{Lease: lease("10.5.2.0/24", "192.168.77.2")},
		{Lease: lease("10.5.3.0/24", "192.168.88.5")}, // not directly connected
	}}}
	want := []string{fmt.Sprintf("10.5.2.0/24 via 192.168.77.2 dev %d", ext.Index)}
	check := func(want []string) func() error {
		return func() error {
			got, err := ownRoutes(a.Handle)
			if err != nil {
				return err
			}
			if !slices.Equal(got, want) {
				return fmt.Errorf("routes %q, want %q", got, want)
			}
			return nil
		}
	}
	backendtest.Eventually(t, 5*time.Second, check(want))
	backendtest.Eventually(t, 2*time.Second, func() error {
		st := bk.Status()
		if len(st.Peers) != 2 {
			return fmt.Errorf("status peers %+v", st.Peers)
		}
		p := st.Peers[1]
		if p.Programmed || !strings.Contains(p.LastError, "192.168.88.5") || !st.Peers[0].Programmed {
			return fmt.Errorf("status peers %+v", st.Peers)
		}
		return nil
	})

	// Repair: a deleted route is back.
	a.IP(t, "route", "del", "10.5.2.0/24")
	backendtest.Eventually(t, 2*time.Second, check(want))

	// The unreachable peer becomes reachable when ext gets an address there.
	a.IP(t, "addr", "add", "192.168.88.1/24", "dev", "eth0")
	want = append(want, fmt.Sprintf("10.5.3.0/24 via 192.168.88.5 dev %d", ext.Index))
	backendtest.Eventually(t, 2*time.Second, check(want))

	// A removed lease takes its route along.
	updates <- backend.Update{Batch: &subnet.Batch{Events: []subnet.Event{{Type: subnet.EventRemoved, Lease: lease("10.5.2.0/24", "192.168.77.2")}}}}
	backendtest.Eventually(t, 2*time.Second, check(want[1:]))
}

func TestNewRefusesNAT(t *testing.T) {
	a, b := backendtest.NewNS(t, "a"), backendtest.NewNS(t, "b")
	backendtest.Veth(t, a, "eth0", b, "eth0")
	a.IP(t, "addr", "add", "192.168.77.1/24", "dev", "eth0")
	ext := a.Ext(t, "eth0", netip.MustParseAddr("192.168.77.1"))
	ext.PublicIP = netip.MustParseAddr("203.0.113.7")
	_, err := New(Options{Handle: a.Handle, Ext: ext, Config: &subnet.Config{BackendType: Type}})
	if !errors.Is(err, ErrPublicIPNotLocal) || err.Error() != "host-gw: public IP 203.0.113.7 is not an address of eth0 (NAT?)" {
		t.Fatalf("New with a NATed public IP: %v", err)
	}
}
