package vxlan

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/netagent/netagent/backend"
	"github.com/netagent/netagent/backend/backendtest"
	"github.com/netagent/netagent/internal/await"
	"github.com/netagent/netagent/lease"
)

// startNetwork runs an IPv4 backend for the network 10.5.0.0/16 (/24
// leases) with the given backend settings.
func startNetwork(t *testing.T, e *env, backendJSON string) *running {
	t.Helper()
	return startConfig(t, e.a, e.ext, &lease.Config{
		EnableIPv4: true, Network: netip.MustParsePrefix("10.5.0.0/16"), SubnetLen: 24,
		BackendType: Type, Backend: json.RawMessage(backendJSON),
	})
}

// peerStatus waits for the status of subnet sub to satisfy ok.
func peerStatus(t *testing.T, r *running, sub string, ok func(backend.PeerStatus) error) {
	t.Helper()
	await.Eventually(t, 5*time.Second, "the peer's status", func() error {
		for _, p := range r.Status().Peers {
			if p.Subnet.String() == sub {
				return ok(p)
			}
		}
		return fmt.Errorf("no peer %s", sub)
	})
}

// Another instance's routes (another network, same protocol) and a
// neighbour outside the network on the device are not the engine's: they
// survive its passes, while its own orphans are pruned.
func TestOwnershipLeavesOtherInstances(t *testing.T) {
	e := newEnv(t)
	// A second instance for 10.6.0.0/16, DirectRouting and vxlan-mode
	// routes on its own device.
	e.a.IP(t, "link", "add", "flannel.2", "type", "vxlan", "id", "2", "local", "192.168.77.1", "dev", "eth0", "dstport", "8472", "nolearning")
	e.a.IP(t, "link", "set", "flannel.2", "up")
	e.a.IP(t, "route", "add", "10.6.2.0/24", "via", "192.168.77.2", "dev", "eth0", "proto", "78")
	e.a.IP(t, "route", "add", "10.6.3.0/24", "via", "10.6.3.0", "dev", "flannel.2", "onlink", "proto", "78")
	// An orphan of this instance's network, via the underlay.
	e.a.IP(t, "route", "add", "10.5.99.0/24", "via", "192.168.77.2", "dev", "eth0", "proto", "78")

	r := startNetwork(t, e, `{"Type":"vxlan","DirectRouting":true}`)
	r.updates <- backend.Update{Own: own(), Batch: snapshot(peerLease("10.5.2.0/24", "192.168.77.2", macB))}
	others := []string{"10.6.2.0/24 via 192.168.77.2 dev eth0", "10.6.3.0/24 via 10.6.3.0 dev flannel.2 onlink"}
	await.Eventually(t, 5*time.Second, "own routes only, foreign ones untouched", func() error {
		got, err := backendtest.OwnRoutes(e.a.Handle, netlink.FAMILY_V4)
		if err != nil {
			return err
		}
		want := strings.Join(append([]string{"10.5.2.0/24 via 192.168.77.2 dev eth0"}, others...), "\n")
		if g := strings.Join(got, "\n"); !sameLines(g, want) {
			return fmt.Errorf("routes:\n%s\nwant:\n%s", g, want)
		}
		return nil
	})

	// A neighbour outside the network, added by hand on the device.
	e.a.IP(t, "neigh", "add", "192.168.50.5", "lladdr", "02:00:00:00:50:05", "dev", "flannel.1", "nud", "permanent")
	// A stray neighbour inside the network is the engine's and pruned;
	// once it is gone, a pass has run after the foreign one was added.
	e.a.IP(t, "neigh", "add", "10.5.88.0", "lladdr", "02:00:00:00:88:00", "dev", "flannel.1", "nud", "permanent")
	await.Eventually(t, 5*time.Second, "the stray neighbour pruned", func() error {
		if out := e.a.IP(t, "neigh", "show", "dev", "flannel.1"); strings.Contains(out, "10.5.88.0") {
			return fmt.Errorf("stray neighbour kept:\n%s", out)
		}
		return nil
	})
	if out := e.a.IP(t, "neigh", "show", "dev", "flannel.1"); !strings.Contains(out, "192.168.50.5 lladdr 02:00:00:00:50:05 PERMANENT") {
		t.Errorf("foreign neighbour outside the network removed:\n%s", out)
	}
	if got, _ := backendtest.OwnRoutes(e.a.Handle, netlink.FAMILY_V4); !sameLines(strings.Join(got, "\n"), strings.Join(append([]string{"10.5.2.0/24 via 192.168.77.2 dev eth0"}, others...), "\n")) {
		t.Errorf("routes after the pass: %q", got)
	}
}

// A route of another protocol over a peer's prefix is not replaced: the
// peer reports it, and gets its route back when it is gone. That holds
// for a route put over the peer's (a pass) and for a peer whose lease
// arrives while the route is there (an event).
func TestForeignRouteOverPeer(t *testing.T) {
	e := newEnv(t)
	// Held before the lease of 10.5.3.0/24 arrives.
	e.a.IP(t, "route", "add", "10.5.3.0/24", "via", "192.168.77.2", "dev", "eth0", "proto", "static")
	r := startNetwork(t, e, `{"Type":"vxlan"}`)
	r.updates <- backend.Update{Own: own(), Batch: snapshot(peerLease("10.5.2.0/24", "192.168.77.2", macB))}
	waitEntries(t, e.a, "flannel.1", vx("10.5.2.0/24", "192.168.77.2", macB), 5*time.Second)
	r.updates <- backend.Update{Batch: event(lease.EventAdded, peerLease("10.5.3.0/24", "192.168.77.3", macC))}

	e.a.IP(t, "route", "replace", "10.5.2.0/24", "via", "192.168.77.2", "dev", "eth0")
	for _, sub := range []string{"10.5.2.0/24", "10.5.3.0/24"} {
		peerStatus(t, r, sub, func(p backend.PeerStatus) error {
			if p.ForeignRoute == "" || p.Programmed || !strings.Contains(p.LastError, "does not own") {
				return fmt.Errorf("peer %s: foreign %q programmed %t error %q", sub, p.ForeignRoute, p.Programmed, p.LastError)
			}
			return nil
		})
	}
	for sub, proto := range map[string]string{"10.5.2.0/24": "boot", "10.5.3.0/24": "static"} {
		if out := e.a.IP(t, "-d", "route", "show", sub); !strings.Contains(out, "proto "+proto) || !strings.Contains(out, "via 192.168.77.2 dev eth0") {
			t.Errorf("foreign route over %s changed: %q", sub, out)
		}
	}
	if n := r.Status().Counters.ForeignRoutes; n != 2 {
		t.Errorf("ForeignRoutes = %d, want 2 (one per conflict)", n)
	}

	e.a.IP(t, "route", "del", "10.5.2.0/24")
	e.a.IP(t, "route", "del", "10.5.3.0/24")
	waitEntries(t, e.a, "flannel.1", merge(vx("10.5.2.0/24", "192.168.77.2", macB), vx("10.5.3.0/24", "192.168.77.3", macC)), 5*time.Second)
	for _, sub := range []string{"10.5.2.0/24", "10.5.3.0/24"} {
		peerStatus(t, r, sub, func(p backend.PeerStatus) error {
			if p.ForeignRoute != "" || !p.Programmed {
				return fmt.Errorf("peer %s: foreign %q programmed %t", sub, p.ForeignRoute, p.Programmed)
			}
			return nil
		})
	}
	if c := r.Status().Counters; c.Repairs["route"] != 0 {
		t.Errorf("route repairs %d: a foreign route is not repaired", c.Repairs["route"])
	}
}

func sameLines(a, b string) bool {
	as, bs := strings.Split(a, "\n"), strings.Split(b, "\n")
	if len(as) != len(bs) {
		return false
	}
	seen := map[string]int{}
	for _, l := range as {
		seen[l]++
	}
	for _, l := range bs {
		if seen[l]--; seen[l] < 0 {
			return false
		}
	}
	return true
}

// A route that forwards as the engine's would, with another protocol
// (flannel's, on a host moving from flannel), is adopted, not reported.
func TestAdoptsFlannelRoute(t *testing.T) {
	e := newEnv(t)
	e.a.IP(t, "link", "add", "flannel.1", "type", "vxlan", "id", "1", "local", "192.168.77.1", "dev", "eth0", "dstport", "8472", "nolearning")
	e.a.IP(t, "link", "set", "flannel.1", "up")
	e.a.IP(t, "route", "add", "10.5.2.0/24", "via", "10.5.2.0", "dev", "flannel.1", "onlink")
	r := startNetwork(t, e, `{"Type":"vxlan"}`)
	r.updates <- backend.Update{Own: own(), Batch: snapshot(peerLease("10.5.2.0/24", "192.168.77.2", macB))}
	waitEntries(t, e.a, "flannel.1", vx("10.5.2.0/24", "192.168.77.2", macB), 5*time.Second)
	peerStatus(t, r, "10.5.2.0/24", func(p backend.PeerStatus) error {
		if p.ForeignRoute != "" || !p.Programmed {
			return fmt.Errorf("foreign %q programmed %t error %q", p.ForeignRoute, p.Programmed, p.LastError)
		}
		return nil
	})
	if out := e.a.IP(t, "route", "show", "10.5.2.0/24"); strings.Count(out, "\n") != 1 {
		t.Errorf("routes over the prefix: %q; want the agent's only", out)
	}
	if n := r.Status().Counters.ForeignRoutes; n != 0 {
		t.Errorf("ForeignRoutes = %d, want 0", n)
	}
}

// The IPv6 engine owns by its own network (IPv6Network): another
// instance's IPv6 route with the same protocol survives, an orphan of its
// network is pruned.
func TestOwnershipIPv6(t *testing.T) {
	e := newEnvFamilies(t, true, true)
	e.a.IP(t, "-6", "route", "add", "fd00:6:0:2::/64", "via", "fd77::2", "dev", "eth0", "proto", "78")
	e.a.IP(t, "-6", "route", "add", "fc00:0:0:99::/64", "via", "fd77::2", "dev", "eth0", "proto", "78")
	r := startConfig(t, e.a, e.ext, &lease.Config{
		EnableIPv4: true, EnableIPv6: true,
		Network: netip.MustParsePrefix("10.5.0.0/16"), SubnetLen: 24,
		IPv6Network: netip.MustParsePrefix("fc00::/48"), IPv6SubnetLen: 64,
		BackendType: Type, Backend: json.RawMessage(`{"Type":"vxlan","DirectRouting":true}`),
	})
	own := dualLease(ownSubnet.String(), hostA.String(), "", ownSubnetV6.String(), hostAV6.String(), "")
	r.updates <- backend.Update{Own: &own, Batch: snapshot(
		dualLease("10.5.2.0/24", "192.168.77.2", macB, "fc00:0:0:2::/64", "fd77::2", macC))}
	want := "fc00:0:0:2::/64 via fd77::2 dev eth0\nfd00:6:0:2::/64 via fd77::2 dev eth0"
	await.Eventually(t, 5*time.Second, "own IPv6 routes only", func() error {
		got, err := backendtest.OwnRoutes(e.a.Handle, netlink.FAMILY_V6)
		if err != nil {
			return err
		}
		if g := strings.Join(got, "\n"); !sameLines(g, want) {
			return fmt.Errorf("IPv6 routes:\n%s\nwant:\n%s", g, want)
		}
		return nil
	})
}
