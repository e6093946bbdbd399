package iface

import (
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/netagent/netagent/internal/nlretry"
)

// link is one interface and its addresses, as one consistent look.
type link struct {
	name  string
	index int
	mtu   int
	up    bool
	addrs []netlink.Addr
}

// snapshot is the interfaces of a namespace, in index order.
type snapshot []link

// takeSnapshot lists the interfaces and their addresses.
// Equivalent to: `ip -o link show` and `ip -o addr show`.
func takeSnapshot(h *netlink.Handle) (snapshot, error) {
	links, err := nlretry.Dump(h.LinkList)
	if err != nil {
		return nil, fmt.Errorf("iface: listing interfaces: %w", err)
	}
	addrs, err := nlretry.Dump(func() ([]netlink.Addr, error) {
		return h.AddrList(nil, netlink.FAMILY_ALL)
	})
	if err != nil {
		return nil, fmt.Errorf("iface: listing addresses: %w", err)
	}
	byIndex := make(map[int][]netlink.Addr)
	for _, a := range addrs {
		if a.IPNet != nil {
			byIndex[a.LinkIndex] = append(byIndex[a.LinkIndex], a)
		}
	}
	s := make(snapshot, 0, len(links))
	for _, l := range links {
		la := l.Attrs()
		s = append(s, link{
			name:  la.Name,
			index: la.Index,
			mtu:   la.MTU,
			up:    la.Flags&net.FlagUp != 0,
			addrs: byIndex[la.Index],
		})
	}
	slices.SortFunc(s, func(a, b link) int { return a.index - b.index })
	return s, nil
}

func (s snapshot) byName(name string) *link {
	for i := range s {
		if s[i].name == name {
			return &s[i]
		}
	}
	return nil
}

func (s snapshot) byIndex(index int) *link {
	for i := range s {
		if s[i].index == index {
			return &s[i]
		}
	}
	return nil
}

// holding returns the interface that has addr assigned, or nil.
func (s snapshot) holding(addr netip.Addr) *link {
	for i := range s {
		for _, a := range s[i].addrs {
			if ipAddr(a.IP) == addr {
				return &s[i]
			}
		}
	}
	return nil
}

// String lists the interfaces for error messages:
// "lo (127.0.0.1/8, ::1/128), veth0 (192.168.77.2/24), veth1 (down)".
// IPv6 link-local addresses are left out: they are never eligible.
func (s snapshot) String() string {
	parts := make([]string, 0, len(s))
	for _, l := range s {
		var details []string
		if !l.up {
			details = append(details, "down")
		}
		for _, a := range l.addrs {
			p := ipPrefix(a.IPNet)
			if p.Addr().Is6() && p.Addr().IsLinkLocalUnicast() {
				continue
			}
			details = append(details, p.String())
		}
		if len(details) == 0 {
			parts = append(parts, l.name)
			continue
		}
		parts = append(parts, fmt.Sprintf("%s (%s)", l.name, strings.Join(details, ", ")))
	}
	if len(parts) == 0 {
		return "none"
	}
	return strings.Join(parts, ", ")
}

// eligible returns the addresses of the family (4 or 6) that can carry
// the overlay, in the kernel's order with deprecated addresses last:
// global unicast (which includes private ranges; excludes loopback,
// link-local, multicast), universe or site scope, and neither tentative
// (duplicate address detection still running) nor failed DAD.
func eligible(addrs []netlink.Addr, family int) []netip.Addr {
	var good, deprecated []netip.Addr
	for _, a := range addrs {
		ip := ipAddr(a.IP)
		if !ip.IsValid() || (family == 4) != ip.Is4() {
			continue
		}
		if !ip.IsGlobalUnicast() || a.Scope >= unix.RT_SCOPE_LINK {
			continue
		}
		if a.Flags&(unix.IFA_F_TENTATIVE|unix.IFA_F_DADFAILED) != 0 {
			continue
		}
		if a.Flags&unix.IFA_F_DEPRECATED != 0 {
			deprecated = append(deprecated, ip)
			continue
		}
		good = append(good, ip)
	}
	return append(good, deprecated...)
}

// ipAddr converts a net.IP from netlink, unmapping IPv4 held in 16 bytes.
// It returns the zero Addr for nil or malformed input.
func ipAddr(ip net.IP) netip.Addr {
	if v4 := ip.To4(); v4 != nil {
		return netip.AddrFrom4([4]byte(v4))
	}
	a, _ := netip.AddrFromSlice(ip)
	return a
}

func ipPrefix(n *net.IPNet) netip.Prefix {
	ones, _ := n.Mask.Size()
	return netip.PrefixFrom(ipAddr(n.IP), ones)
}
