package test

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/netagent/netagent/internal/await"
	"github.com/netagent/netagent/internal/lab"
	"github.com/netagent/netagent/lease"
)

// vxlanConfig is the tests' network. The hosts lease from 10.5.1.0 to
// 10.5.199.0 only: the leases the tests write by hand (fake peers, hostile
// values) use 10.5.200.0 and up, so that they never land on, overwrite or
// delete a host's own lease.
const vxlanConfig = `{"Network":"10.5.0.0/16","SubnetMax":"10.5.199.0","Backend":{"Type":"vxlan"}}`

// TestConnectivity: for each backend, every container reaches every other
// across hosts, and the overlay MTU holds exactly.
func TestConnectivity(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		backend string
		mtu     int
	}{
		{"vxlan", 1450},
		{"host-gw", 1500},
	} {
		t.Run(tt.backend, func(t *testing.T) {
			c := newCluster(t, clusterOptions{Hosts: 3,
				Config: fmt.Sprintf(`{"Network":"10.5.0.0/16","Backend":{"Type":%q}}`, tt.backend)})
			infos := c.startAll()
			seen := map[netip.Prefix]bool{}
			for name, info := range infos {
				if info.MTU != tt.mtu || !info.IPMasq || info.Network != netip.MustParsePrefix("10.5.0.0/16") {
					t.Errorf("%s subnet file: %+v, want MTU %d, ip-masq, network 10.5.0.0/16", name, info, tt.mtu)
				}
				if seen[info.Subnet] {
					t.Errorf("subnet %s leased twice", info.Subnet)
				}
				seen[info.Subnet] = true
			}
			c.awaitReady()
			var ctns []*container
			for _, h := range c.hosts() {
				ctns = append(ctns, c.addContainer(h), c.addContainer(h))
			}
			c.pingMatrix(ctns)

			// Across hosts, a DF ping of MTU-28 bytes passes and one more fails.
			a, b := ctns[0], ctns[2]
			if err := c.ping(a.NS, b.IP, lab.PingOptions{Count: 1, Size: tt.mtu - 28, DontFragment: true}); err != nil {
				t.Errorf("DF ping of %d bytes: %v", tt.mtu-28, err)
			}
			if err := c.ping(a.NS, b.IP, lab.PingOptions{Count: 1, Size: tt.mtu - 27, DontFragment: true}); err == nil {
				t.Errorf("DF ping of %d bytes passed, want it refused by MTU %d", tt.mtu-27, tt.mtu)
			}
		})
	}
}

// route, neighbour and fdb entries of h1 for the peer with subnet sn.
type peerEntries struct {
	route, neigh, fdb bool
}

func vxlanEntries(t *testing.T, nh *netlink.Handle, sn netip.Prefix) peerEntries {
	t.Helper()
	var e peerEntries
	link, err := nh.LinkByName("flannel.1")
	if err != nil {
		return e
	}
	routes, _ := nh.RouteList(link, netlink.FAMILY_V4)
	for _, r := range routes {
		if r.Dst != nil && r.Dst.String() == sn.String() && r.Gw.String() == sn.Addr().String() {
			e.route = true
		}
	}
	neighs, _ := nh.NeighList(link.Attrs().Index, netlink.FAMILY_V4)
	var mac string
	for _, n := range neighs {
		if n.IP.String() == sn.Addr().String() && n.State&netlink.NUD_PERMANENT != 0 {
			e.neigh = true
			mac = n.HardwareAddr.String()
		}
	}
	fdbs, _ := nh.NeighList(link.Attrs().Index, syscall.AF_BRIDGE)
	for _, n := range fdbs {
		if mac != "" && n.HardwareAddr.String() == mac && n.IP != nil {
			e.fdb = true
		}
	}
	return e
}

// TestRepair: what someone deletes under the agent comes back without a
// restart, the agent counts the kernel repair in its status, and traffic
// flows again.
func TestRepair(t *testing.T) {
	t.Parallel()
	c := newCluster(t, clusterOptions{Hosts: 2, Config: vxlanConfig})
	infos := c.startAll()
	c.awaitReady()
	h1, h2 := c.hosts()[0], c.hosts()[1]
	c1, c2 := c.addContainer(h1), c.addContainer(h2)
	if err := c.ping(c1.NS, c2.IP, lab.PingOptions{Count: 2}); err != nil {
		t.Fatalf("before any damage: %v", err)
	}
	nh := c.handle(h1.NS)
	peer := infos[h2.Name].Subnet
	allBack := func() error {
		if e := vxlanEntries(t, nh, peer); !(e.route && e.neigh && e.fdb) {
			return fmt.Errorf("entries for %s: %+v", peer, e)
		}
		return nil
	}
	await.Eventually(t, 30*time.Second, "entries programmed", allBack)

	link, err := nh.LinkByName("flannel.1")
	if err != nil {
		t.Fatal(err)
	}
	_, dst, _ := net.ParseCIDR(peer.String())
	damage := []struct {
		name   string
		break_ func() error
	}{
		{"route", func() error {
			return nh.RouteDel(&netlink.Route{LinkIndex: link.Attrs().Index, Dst: dst, Gw: dst.IP, Flags: int(netlink.FLAG_ONLINK)})
		}},
		{"neighbour", func() error {
			neighs, _ := nh.NeighList(link.Attrs().Index, netlink.FAMILY_V4)
			for _, n := range neighs {
				if n.IP.Equal(dst.IP) {
					return nh.NeighDel(&n)
				}
			}
			return fmt.Errorf("no neighbour")
		}},
		{"fdb", func() error {
			fdbs, _ := nh.NeighList(link.Attrs().Index, syscall.AF_BRIDGE)
			for _, n := range fdbs {
				if n.IP != nil && n.IP.String() == h2.Underlay.Addr().String() {
					return nh.NeighDel(&n)
				}
			}
			return fmt.Errorf("no fdb entry")
		}},
		{"device", func() error { return nh.LinkDel(link) }},
		{"masquerade rule", func() error {
			_, err := c.exec(h1.NS, "iptables", "-t", "nat", "-D", "FLANNEL-POSTRTG",
				"-s", "10.5.0.0/16", "!", "-d", "224.0.0.0/4", "-j", "MASQUERADE", "--random-fully")
			return err
		}},
	}
	// repairs is the sum of h1's repair counters by kind.
	repairs := func() (uint64, error) {
		r, err := c.statusReport(h1)
		if err != nil {
			return 0, err
		}
		if r.Backend == nil {
			return 0, fmt.Errorf("no backend in h1's status")
		}
		var n uint64
		for _, v := range r.Backend.Repairs {
			n += v
		}
		return n, nil
	}
	var repaired uint64
	countRepairs := func() error {
		n, err := repairs()
		repaired = n
		return err
	}
	await.Eventually(t, time.Minute, "h1's repair count", countRepairs)
	for _, d := range damage {
		if err := d.break_(); err != nil {
			t.Fatalf("break %s: %v", d.name, err)
		}
		start := time.Now()
		if d.name == "masquerade rule" {
			await.Eventually(t, 30*time.Second, "masquerade rule back", func() error {
				out, err := c.exec(h1.NS, "iptables", "-t", "nat", "-S", "FLANNEL-POSTRTG")
				if err != nil {
					return err
				}
				if !strings.Contains(string(out), "-s 10.5.0.0/16 ! -d 224.0.0.0/4 -j MASQUERADE") {
					return fmt.Errorf("rule missing:\n%s", out)
				}
				return nil
			})
		} else {
			await.Eventually(t, 30*time.Second, d.name+" back", allBack)
			// The counter is raised right after the kernel call.
			await.Eventually(t, time.Minute, d.name+" repair counted", func() error {
				n, err := repairs()
				if err != nil {
					return err
				}
				if n <= repaired {
					return fmt.Errorf("repairs %d, as before the damage", n)
				}
				return nil
			})
			await.Eventually(t, time.Minute, "h1's repair count", countRepairs)
			if d.name == "device" {
				link, err = nh.LinkByName("flannel.1")
				if err != nil {
					t.Fatal(err)
				}
			}
		}
		t.Logf("%s repaired in %v", d.name, time.Since(start).Round(time.Millisecond))
		if err := c.ping(c1.NS, c2.IP, lab.PingOptions{Count: 2}); err != nil {
			t.Errorf("after %s repair: %v", d.name, err)
		}
	}
	if c.agent(h1).Exited() {
		t.Errorf("h1's agent exited during the repairs:\n%s", c.agent(h1).Tail(40))
	}
}

// TestPeerRemovedWhileStopped: a lease deleted while the agent was down
// leaves no entry behind once the agent is back.
func TestPeerRemovedWhileStopped(t *testing.T) {
	t.Parallel()
	c := newCluster(t, clusterOptions{Hosts: 3, Config: vxlanConfig})
	infos := c.startAll()
	c.awaitReady()
	h1, h2 := c.hosts()[0], c.hosts()[1]
	nh := c.handle(h1.NS)
	gone := infos[h2.Name].Subnet
	await.Eventually(t, 60*time.Second, "h2's entries on h1", func() error {
		if e := vxlanEntries(t, nh, gone); !(e.route && e.neigh && e.fdb) {
			return fmt.Errorf("%+v", e)
		}
		return nil
	})
	for _, h := range []*lab.Host{h1, h2} {
		if err := c.agent(h).Stop(10 * time.Second); err != nil {
			t.Logf("stop %s: %v", h.Name, err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := c.etcd.Delete(ctx, prefix+"/subnets/"+lease.LeaseKey(gone, netip.Prefix{})); err != nil {
		t.Fatal(err)
	}
	if e := vxlanEntries(t, nh, gone); !e.route {
		t.Fatalf("entries vanished while the agent was stopped: %+v", e)
	}
	c.startAgent(h1)
	await.Eventually(t, 60*time.Second, "stale entries pruned", func() error {
		if e := vxlanEntries(t, nh, gone); e.route || e.neigh || e.fdb {
			return fmt.Errorf("still there: %+v", e)
		}
		return nil
	})
	// The third host is still served.
	if e := vxlanEntries(t, nh, infos[c.hosts()[2].Name].Subnet); !(e.route && e.neigh && e.fdb) {
		t.Errorf("h3's entries: %+v", e)
	}
}
