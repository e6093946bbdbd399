package iface

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/netagent/netagent/internal/nlretry"
)

var (
	// ErrNoInterface is wrapped by every error that says no interface
	// satisfies the options (as opposed to invalid options or a netlink
	// failure). SelectWait retries on it.
	ErrNoInterface = errors.New("iface: no interface matches")
	// ErrInterfaceDown is also wrapped when a candidate was rejected
	// because it is administratively down.
	ErrInterfaceDown = errors.New("iface: interface is down")
	// ErrNoDefaultRoute is also wrapped when no option chose an interface
	// and the main table has no default route of the needed family.
	ErrNoDefaultRoute = errors.New("iface: no default route")
)

// noMatchError says what was asked, why each candidate failed, and which
// interfaces exist.
type noMatchError struct {
	criteria string   // "--iface=eth9", "the IPv4 default route"
	reasons  []string // "eth9: no such interface", "veth1 is down"
	ifaces   string   // snapshot.String()
	down     bool
	noRoute  bool
}

func (e *noMatchError) Error() string {
	var b strings.Builder
	b.WriteString(ErrNoInterface.Error())
	b.WriteString(" ")
	b.WriteString(e.criteria)
	if len(e.reasons) > 0 {
		fmt.Fprintf(&b, " (%s)", strings.Join(e.reasons, "; "))
	}
	b.WriteString("; interfaces: ")
	b.WriteString(e.ifaces)
	return b.String()
}

// add records why a candidate failed, once.
func (e *noMatchError) add(reason string) {
	if !slices.Contains(e.reasons, reason) {
		e.reasons = append(e.reasons, reason)
	}
}

func (e *noMatchError) Is(target error) bool {
	switch target {
	case ErrNoInterface:
		return true
	case ErrInterfaceDown:
		return e.down
	case ErrNoDefaultRoute:
		return e.noRoute
	}
	return false
}

// candidate is an interface to try, possibly with the address that
// designated it (--iface=<IP>, a --iface-regex address match, the source
// address of --iface-can-reach).
type candidate struct {
	link *link
	addr netip.Addr
}

// Select finds the external interface in the network namespace of h, the
// way flanneld does (see Options for the order of the criteria):
//
//   - --iface=<name> and --iface=<IP>: the named interface, or the one
//     holding the address; the address becomes Addr (or AddrV6).
//   - --iface-regex: every eligible address of every interface, then every
//     interface name; a matching address becomes Addr (or AddrV6).
//   - --iface-can-reach: the output interface and preferred source
//     address of the route to it (`ip route get`).
//   - otherwise the interface of the main table's default route, IPv4 when
//     IPv4 is enabled, else IPv6; with several, the lowest metric first.
//
// The first candidate that is usable wins. Usable means: administratively
// up (carrier is not required, so a cable that is briefly unplugged does
// not change the choice), a non-zero MTU, and an eligible address of every
// enabled family (global unicast, not tentative; see eligible). An address
// that designated the interface is used as is for its family; the other
// family gets the interface's first eligible address. Unlike flanneld, a
// candidate that is down is skipped: the error then wraps ErrInterfaceDown
// as well as ErrNoInterface, and SelectWait waits for it to come up.
//
// PublicIP is Options.PublicIP when set, else Addr; PublicIPv6 likewise.
// Fields of a family that is not enabled are left invalid.
//
// Equivalent to: `ip -o link show`, `ip -o addr show`, `ip route show
// default` and `ip route get <CanReach>`.
func Select(h *netlink.Handle, opts Options) (External, error) {
	p, err := opts.compile()
	if err != nil {
		return External{}, err
	}
	return p.selectOnce(h)
}

func (p *plan) selectOnce(h *netlink.Handle) (External, error) {
	snap, err := takeSnapshot(h)
	if err != nil {
		return External{}, err
	}
	nm := &noMatchError{}
	var ext External
	var ok bool
	switch {
	case len(p.Ifaces) > 0 || len(p.regexps) > 0:
		ext, ok = p.byFlags(snap, nm)
	case p.CanReach.IsValid():
		ext, ok, err = p.byRoute(h, snap, nm)
	default:
		ext, ok, err = p.byDefaultRoute(h, snap, nm)
	}
	if err != nil {
		return External{}, err
	}
	if !ok {
		nm.ifaces = snap.String()
		return External{}, nm
	}
	ext.PublicIP, ext.PublicIPv6 = ext.Addr, ext.AddrV6
	if p.PublicIP.IsValid() {
		ext.PublicIP = p.PublicIP
	}
	if p.PublicIPv6.IsValid() {
		ext.PublicIPv6 = p.PublicIPv6
	}
	return ext, nil
}

// byFlags tries --iface values, then --iface-regex values, in order.
func (p *plan) byFlags(snap snapshot, nm *noMatchError) (External, bool) {
	var crit []string
	for _, s := range p.Ifaces {
		crit = append(crit, "--iface="+s)
	}
	for _, s := range p.IfaceRegex {
		crit = append(crit, "--iface-regex="+s)
	}
	nm.criteria = strings.Join(crit, " ")

	for _, s := range p.Ifaces {
		var c candidate
		if ip, err := netip.ParseAddr(s); err == nil {
			ip = ip.Unmap()
			c = candidate{link: snap.holding(ip), addr: ip}
			if c.link == nil {
				nm.add(s + ": no interface has this address")
				continue
			}
		} else {
			c.link = snap.byName(s)
			if c.link == nil {
				nm.add(s + ": no such interface")
				continue
			}
		}
		if ext, ok := p.try(c, nm); ok {
			return ext, true
		}
	}
	for i, re := range p.regexps {
		var cands []candidate
		for j := range snap {
			for _, fam := range p.familyNumbers() {
				for _, ip := range eligible(snap[j].addrs, fam) {
					if re.MatchString(ip.String()) {
						cands = append(cands, candidate{link: &snap[j], addr: ip})
					}
				}
			}
		}
		for j := range snap {
			if re.MatchString(snap[j].name) {
				cands = append(cands, candidate{link: &snap[j]})
			}
		}
		if len(cands) == 0 {
			nm.add(p.IfaceRegex[i] + ": matches no address and no interface name")
		}
		for _, c := range cands {
			if ext, ok := p.try(c, nm); ok {
				return ext, true
			}
		}
	}
	return External{}, false
}

// byRoute uses the route the kernel would take to CanReach.
// Equivalent to: `ip route get <CanReach>`.
func (p *plan) byRoute(h *netlink.Handle, snap snapshot, nm *noMatchError) (External, bool, error) {
	nm.criteria = "--iface-can-reach=" + p.CanReach.String()
	routes, err := h.RouteGet(net.IP(p.CanReach.AsSlice()))
	if err != nil {
		nm.add(fmt.Sprintf("no route to %s: %v", p.CanReach, err))
		return External{}, false, nil
	}
	for _, r := range routes {
		l := snap.byIndex(r.LinkIndex)
		if l == nil {
			nm.add(fmt.Sprintf("route to %s uses unknown interface index %d", p.CanReach, r.LinkIndex))
			continue
		}
		if ext, ok := p.try(candidate{link: l, addr: ipAddr(r.Src)}, nm); ok {
			return ext, true, nil
		}
	}
	return External{}, false, nil
}

// byDefaultRoute uses the interfaces of the main table's default routes,
// lowest metric first.
// Equivalent to: `ip route show default` (or `ip -6 route show default`).
func (p *plan) byDefaultRoute(h *netlink.Handle, snap snapshot, nm *noMatchError) (External, bool, error) {
	family, name := netlink.FAMILY_V4, "IPv4"
	if !p.EnableIPv4 {
		family, name = netlink.FAMILY_V6, "IPv6"
	}
	nm.criteria = "the " + name + " default route"
	routes, err := nlretry.Dump(func() ([]netlink.Route, error) {
		return h.RouteListFiltered(family, &netlink.Route{Table: unix.RT_TABLE_MAIN}, netlink.RT_FILTER_TABLE)
	})
	if err != nil {
		return External{}, false, fmt.Errorf("iface: listing %s routes: %w", name, err)
	}
	var defaults []netlink.Route
	for _, r := range routes {
		if r.Type != unix.RTN_UNICAST || r.Dst == nil {
			continue
		}
		if ones, _ := r.Dst.Mask.Size(); ones == 0 {
			defaults = append(defaults, r)
		}
	}
	if len(defaults) == 0 {
		nm.noRoute = true
		nm.add(fmt.Sprintf("no %s default route; choose one with --iface, --iface-regex or --iface-can-reach", name))
		return External{}, false, nil
	}
	slices.SortStableFunc(defaults, func(a, b netlink.Route) int { return a.Priority - b.Priority })
	for _, r := range defaults {
		indexes := []int{r.LinkIndex}
		if r.LinkIndex == 0 {
			indexes = indexes[:0]
			for _, nh := range r.MultiPath {
				indexes = append(indexes, nh.LinkIndex)
			}
		}
		for _, idx := range indexes {
			l := snap.byIndex(idx)
			if l == nil {
				continue
			}
			if ext, ok := p.try(candidate{link: l}, nm); ok {
				return ext, true, nil
			}
		}
	}
	return External{}, false, nil
}

func (p *plan) familyNumbers() []int {
	var f []int
	if p.EnableIPv4 {
		f = append(f, 4)
	}
	if p.EnableIPv6 {
		f = append(f, 6)
	}
	return f
}

// try returns the External for c when it is usable, else records why not.
func (p *plan) try(c candidate, nm *noMatchError) (External, bool) {
	l := c.link
	if !l.up {
		nm.down = true
		nm.add(l.name + " is down")
		return External{}, false
	}
	if l.mtu <= 0 {
		nm.add(l.name + " has no MTU")
		return External{}, false
	}
	ext := External{Name: l.name, Index: l.index, MTU: l.mtu}
	if p.EnableIPv4 {
		if c.addr.Is4() {
			ext.Addr = c.addr
		} else if a := eligible(l.addrs, 4); len(a) > 0 {
			ext.Addr = a[0]
		} else {
			nm.add(l.name + " has no global IPv4 address")
			return External{}, false
		}
	}
	if p.EnableIPv6 {
		if c.addr.Is6() {
			ext.AddrV6 = c.addr
		} else if a := eligible(l.addrs, 6); len(a) > 0 {
			ext.AddrV6 = a[0]
		} else {
			nm.add(l.name + " has no global IPv6 address")
			return External{}, false
		}
	}
	return ext, true
}
