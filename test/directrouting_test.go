package test

import (
	"fmt"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/netagent/netagent/internal/await"
)

// TestDirectRouting: with DirectRouting, peers on the same underlay subnet
// get a plain route via their address; a peer behind a router gets the
// VXLAN entries; every container still reaches every other.
func TestDirectRouting(t *testing.T) {
	t.Parallel()
	c := newCluster(t, clusterOptions{Hosts: 2, RoutedHosts: 1,
		Config: `{"Network":"10.5.0.0/16","Backend":{"Type":"vxlan","DirectRouting":true}}`})
	infos := c.startAll()
	c.awaitReady()
	hs := c.hosts()
	h1, h2, h3 := hs[0], hs[1], hs[2]
	if !h3.Routed {
		t.Fatal("third host is not behind the router")
	}
	nh := c.handle(h1.NS)
	eth0, err := nh.LinkByName("eth0")
	if err != nil {
		t.Fatal(err)
	}
	await.Eventually(t, 60*time.Second, "direct route to h2, vxlan entries to h3", func() error {
		routes, err := nh.RouteList(eth0, netlink.FAMILY_V4)
		if err != nil {
			return err
		}
		direct := false
		for _, r := range routes {
			if r.Dst != nil && r.Dst.String() == infos[h2.Name].Subnet.String() && r.Gw.String() == h2.Underlay.Addr().String() {
				direct = true
			}
		}
		if !direct {
			return fmt.Errorf("no route %s via %s dev eth0", infos[h2.Name].Subnet, h2.Underlay.Addr())
		}
		if e := vxlanEntries(t, nh, infos[h2.Name].Subnet); e.route || e.fdb {
			return fmt.Errorf("h2 also has vxlan entries: %+v", e)
		}
		if e := vxlanEntries(t, nh, infos[h3.Name].Subnet); !(e.route && e.neigh && e.fdb) {
			return fmt.Errorf("h3 (routed) lacks vxlan entries: %+v", e)
		}
		return nil
	})
	var ctns []*container
	for _, h := range hs {
		ctns = append(ctns, c.addContainer(h))
	}
	c.pingMatrix(ctns)
}
