package hostgw

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/netagent/netagent/backend"
	"github.com/netagent/netagent/backend/backendtest"
	"github.com/netagent/netagent/internal/await"
	"github.com/netagent/netagent/internal/nstest"
	"github.com/netagent/netagent/lease"
)

// v4Lease is an IPv4-only lease of this backend type.
func v4Lease(sub, pub string) lease.Lease { return dualLease(sub, pub, "", "") }

// dualLease is a lease of this backend type with the given families (an
// empty subnet string leaves the family out).
func dualLease(sub, pub, sub6, pub6 string) lease.Lease {
	l := lease.Lease{Attrs: lease.LeaseAttrs{BackendType: Type}}
	if sub != "" {
		l.Subnet, l.Attrs.PublicIP = netip.MustParsePrefix(sub), netip.MustParseAddr(pub)
	}
	if sub6 != "" {
		l.IPv6Subnet, l.Attrs.PublicIPv6 = netip.MustParsePrefix(sub6), netip.MustParseAddr(pub6)
	}
	return l
}

// settle bounds how long a test waits for the routes to show what the
// backend was told or how it repaired a change. It only bounds a hang: the
// engine acts on a notification at once and retries a failed peer after
// 1 s, then 2 s, and a loaded machine can delay either by seconds.
const settle = time.Minute

// routesAre is a condition for backendtest.Eventually: the routes of ours
// in ns are want4 (IPv4) and want6 (IPv6), in backendtest.OwnRoutes form.
func routesAre(ns *nstest.NS, want4, want6 []string) func() error {
	return func() error {
		got4, err := backendtest.OwnRoutes(ns.Handle, netlink.FAMILY_V4)
		if err != nil {
			return err
		}
		got6, err := backendtest.OwnRoutes(ns.Handle, netlink.FAMILY_V6)
		if err != nil {
			return err
		}
		if !slices.Equal(got4, want4) || !slices.Equal(got6, want6) {
			return fmt.Errorf("routes %q %q, want %q %q", got4, got6, want4, want6)
		}
		return nil
	}
}

func TestRoutesViaPublicIP(t *testing.T) {
	a, _ := nstest.Underlay(t)
	a.AddrAdd(t, "eth0", "192.168.77.1/24")
	a.IP(t, "route", "add", "10.5.99.0/24", "via", "192.168.77.99", "proto", "78") // stale, ours
	ext := backendtest.Ext(t, a, "eth0", netip.MustParseAddr("192.168.77.1"))

	bk, err := New(backend.Options{Handle: a.Handle, Netns: a.Netns, Ext: ext, Config: &lease.Config{BackendType: Type}, ResyncInterval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	if bk.MTU() != ext.MTU {
		t.Errorf("MTU %d, want %d", bk.MTU(), ext.MTU)
	}
	if d, err := bk.BackendData(); d != nil || err != nil {
		t.Errorf("BackendData = %s, %v; want nil", d, err)
	}
	updates, _ := backendtest.Start(t, bk)

	own := v4Lease("10.5.1.0/24", "192.168.77.1")
	updates <- backend.Update{Own: &own, Batch: &lease.Batch{Snapshot: true, Events: []lease.Event{
		{Lease: own},
		{Lease: v4Lease("10.5.2.0/24", "192.168.77.2")},
		{Lease: v4Lease("10.5.3.0/24", "192.168.88.5")}, // not directly connected
	}}}
	want := []string{"10.5.2.0/24 via 192.168.77.2 dev eth0"}
	await.Eventually(t, settle, "the reachable peer's route", routesAre(a, want, nil))
	await.Eventually(t, settle, "status: the unreachable peer not programmed", func() error {
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
	await.Eventually(t, settle, "the deleted route repaired", routesAre(a, want, nil))

	// The unreachable peer becomes reachable when ext gets an address there.
	a.AddrAdd(t, "eth0", "192.168.88.1/24")
	want = append(want, "10.5.3.0/24 via 192.168.88.5 dev eth0")
	await.Eventually(t, settle, "the peer's route once reachable", routesAre(a, want, nil))

	// A removed lease takes its route along.
	updates <- backend.Update{Batch: &lease.Batch{Events: []lease.Event{{Type: lease.EventRemoved, Lease: v4Lease("10.5.2.0/24", "192.168.77.2")}}}}
	await.Eventually(t, settle, "the removed lease's route gone", routesAre(a, want[1:], nil))
}

func TestNewRefusesNAT(t *testing.T) {
	a, _ := nstest.Underlay(t)
	a.AddrAdd(t, "eth0", "192.168.77.1/24")
	ext := backendtest.Ext(t, a, "eth0", netip.MustParseAddr("192.168.77.1"))
	ext.PublicIP = netip.MustParseAddr("203.0.113.7")
	_, err := New(backend.Options{Handle: a.Handle, Ext: ext, Config: &lease.Config{BackendType: Type}})
	if !errors.Is(err, ErrPublicIPNotLocal) || err.Error() != "host-gw: public IP 203.0.113.7 is not an address of eth0 (NAT?)" {
		t.Fatalf("New with a NATed public IP: %v", err)
	}
}
