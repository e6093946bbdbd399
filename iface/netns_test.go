package iface

import (
	"net"
	"net/netip"
	"testing"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/netagent/netagent/internal/nstest"
)

// newNS creates a network namespace for the test (nstest.NewNS), deleted
// in Cleanup, and returns a netlink handle into it. Nothing runs inside
// it: all changes go through the handle.
func newNS(t *testing.T) *netlink.Handle {
	t.Helper()
	return nstest.NewNS(t, "iface").Handle
}

// addVeth creates the veth pair name/name+"p" with the given MTU (0 = kernel
// default), assigns addrs (CIDR strings, in order; IPv6 without DAD) to
// name, and brings both ends up when up is set.
// Equivalent to: `ip link add name type veth peer name namep; ip addr add ...`.
func addVeth(t *testing.T, h *netlink.Handle, name string, mtu int, up bool, addrs ...string) netlink.Link {
	t.Helper()
	la := netlink.NewLinkAttrs()
	la.Name = name
	la.MTU = mtu
	if err := h.LinkAdd(&netlink.Veth{LinkAttrs: la, PeerName: name + "p"}); err != nil {
		t.Fatalf("add veth %s: %v", name, err)
	}
	l, err := h.LinkByName(name)
	if err != nil {
		t.Fatalf("veth %s: %v", name, err)
	}
	for _, s := range addrs {
		p := netip.MustParsePrefix(s)
		a := &netlink.Addr{IPNet: &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}}
		if p.Addr().Is6() {
			a.Flags = unix.IFA_F_NODAD
		}
		if err := h.AddrAdd(l, a); err != nil {
			t.Fatalf("addr add %s dev %s: %v", s, name, err)
		}
	}
	if up {
		peer, err := h.LinkByName(name + "p")
		if err != nil {
			t.Fatalf("veth peer %sp: %v", name, err)
		}
		for _, x := range []netlink.Link{peer, l} {
			if err := h.LinkSetUp(x); err != nil {
				t.Fatalf("link set %s up: %v", x.Attrs().Name, err)
			}
		}
	}
	return l
}

// addRoute adds dst (CIDR) via gw on dev with the metric and, if not
// empty, preferred source src.
// Equivalent to: `ip route add dst via gw dev dev metric metric [src src]`.
func addRoute(t *testing.T, h *netlink.Handle, dst, gw, dev string, metric int, src string) {
	t.Helper()
	l, err := h.LinkByName(dev)
	if err != nil {
		t.Fatalf("route dev %s: %v", dev, err)
	}
	p := netip.MustParsePrefix(dst)
	r := &netlink.Route{
		Dst:       &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())},
		Gw:        net.IP(netip.MustParseAddr(gw).AsSlice()),
		LinkIndex: l.Attrs().Index,
		Priority:  metric,
	}
	if src != "" {
		r.Src = net.IP(netip.MustParseAddr(src).AsSlice())
	}
	if err := h.RouteAdd(r); err != nil {
		t.Fatalf("route add %s via %s dev %s metric %d: %v", dst, gw, dev, metric, err)
	}
}
