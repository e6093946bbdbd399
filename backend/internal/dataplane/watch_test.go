package dataplane

import (
	"net"
	"net/netip"
	"testing"

	"github.com/vishvananda/netlink"

	"github.com/netagent/netagent/backend"
)

// TestIsWantedRoute checks the allocation-free comparison used on route
// notifications against routeMatches with the route the peer wants.
func TestIsWantedRoute(t *testing.T) {
	e := &Engine{cfg: Config{Family: 4, Ext: extWithIndex(7)}, devIndex: 3}
	vx := &peer{subnet: netip.MustParsePrefix("10.5.17.0/24"), publicIP: netip.MustParseAddr("192.168.77.12"), mode: backend.ModeVXLAN}
	direct := &peer{subnet: vx.subnet, publicIP: vx.publicIP, mode: backend.ModeDirect}
	variants := []struct {
		name string
		edit func(r *netlink.Route)
	}{
		{"as wanted", func(*netlink.Route) {}},
		{"other device", func(r *netlink.Route) { r.LinkIndex = 9 }},
		{"other gateway", func(r *netlink.Route) { r.Gw = net.IP{10, 9, 9, 9} }},
		{"gateway as 16 bytes", func(r *netlink.Route) { r.Gw = r.Gw.To16() }},
		{"no gateway", func(r *netlink.Route) { r.Gw = nil }},
		{"onlink flipped", func(r *netlink.Route) { r.Flags ^= int(netlink.FLAG_ONLINK) }},
		{"other flag", func(r *netlink.Route) { r.Flags |= int(netlink.FLAG_PERVASIVE) }},
		{"other protocol", func(r *netlink.Route) { r.Protocol = 4 }},
	}
	for _, p := range []*peer{vx, direct} {
		for _, other := range []*peer{vx, direct} {
			for _, v := range variants {
				r := e.wantRoute(other)
				v.edit(r)
				want := routeMatches(r, e.wantRoute(p))
				if got := e.isWantedRoute(r, p); got != want {
					t.Errorf("peer %s, route of %s %s: isWantedRoute %t, routeMatches %t", p.mode, other.mode, v.name, got, want)
				}
			}
		}
	}
}
