// Package backendtest runs backends in kernel tests and benchmarks: Start
// runs one, Ext describes its external interface, OwnRoutes lists the routes
// it installed. The namespaces they work in come from internal/nstest.
package backendtest

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"sync"
	"testing"

	"github.com/vishvananda/netlink"

	"github.com/netagent/netagent/backend"
	"github.com/netagent/netagent/iface"
	"github.com/netagent/netagent/internal/nstest"
)

// Ext describes interface name in ns. Each of addrs (addresses of it, at
// most one per family) is both its address and public IP of that family:
// Addr and PublicIP for an IPv4 one, AddrV6 and PublicIPv6 for an IPv6 one.
func Ext(tb testing.TB, ns *nstest.NS, name string, addrs ...netip.Addr) iface.External {
	tb.Helper()
	l := ns.Link(tb, name)
	ext := iface.External{Name: name, Index: l.Attrs().Index, MTU: l.Attrs().MTU}
	for _, a := range addrs {
		switch {
		case a.Is4():
			ext.Addr, ext.PublicIP = a, a
		case a.Is6():
			ext.AddrV6, ext.PublicIPv6 = a, a
		}
	}
	return ext
}

// OwnRoutes lists the routes of family (netlink.FAMILY_V4 or FAMILY_V6)
// that carry backend.RouteProtocol, the mark of the backends' own, sorted,
// each as "DST via GW dev NAME", with " onlink" after it when the route
// has that flag. Equivalent to: `ip -4|-6 route show proto 78`.
func OwnRoutes(h *netlink.Handle, family int) ([]string, error) {
	routes, err := h.RouteListFiltered(family, &netlink.Route{Protocol: backend.RouteProtocol}, netlink.RT_FILTER_PROTOCOL)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, r := range routes {
		l, err := h.LinkByIndex(r.LinkIndex)
		if err != nil {
			return nil, err
		}
		s := fmt.Sprintf("%s via %s dev %s", r.Dst, r.Gw, l.Attrs().Name)
		if r.Flags&int(netlink.FLAG_ONLINK) != 0 {
			s += " onlink"
		}
		out = append(out, s)
	}
	slices.Sort(out)
	return out, nil
}

// Start runs bk.Run in a goroutine until stop is called or tb's cleanup,
// whichever comes first, and fails tb if Run returns an error. Updates
// sent to updates go to Run.
func Start(tb testing.TB, bk backend.Backend) (updates chan<- backend.Update, stop func()) {
	tb.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	ch := make(chan backend.Update, 16)
	var wg sync.WaitGroup
	wg.Go(func() {
		if err := bk.Run(ctx, ch); err != nil {
			tb.Errorf("%s backend: Run: %v", bk.Type(), err)
		}
	})
	stop = sync.OnceFunc(func() { cancel(); wg.Wait() })
	tb.Cleanup(stop)
	return ch, stop
}
