package main

import (
	"net/netip"
	"strings"

	"github.com/netagent/netagent/internal/lab"
)

// The values of `up --ipv6`: the overlay's and the underlay's address
// families.
const (
	// ipv6Off is an IPv4-only lab, the default.
	ipv6Off = "off"
	// ipv6Dual is a dual-stack lab: every host, lease and container has
	// an address of each family.
	ipv6Dual = "dual"
	// ipv6Only is an IPv6-only lab: no IPv4 address on the underlay nor
	// in the overlay.
	ipv6Only = "only"
)

// family is an address family of the overlay, as the report names it.
type family string

const (
	ipv4 family = "IPv4"
	ipv6 family = "IPv6"
)

// familiesOf returns the overlay families of an --ipv6 mode, IPv4 first.
// An empty mode (a state file written before the flag existed) is ipv6Off.
func familiesOf(mode string) []family {
	switch mode {
	case ipv6Dual:
		return []family{ipv4, ipv6}
	case ipv6Only:
		return []family{ipv6}
	default:
		return []family{ipv4}
	}
}

// labIPv6 returns the lab.Options.IPv6 underlay of an --ipv6 mode.
func labIPv6(mode string) string {
	switch mode {
	case ipv6Dual:
		return lab.DualStack
	case ipv6Only:
		return lab.IPv6Only
	default:
		return lab.IPv4Only
	}
}

// familyNames returns "IPv4", "IPv6" or "IPv4 and IPv6".
func familyNames(fams []family) string {
	names := make([]string, len(fams))
	for i, f := range fams {
		names[i] = string(f)
	}
	return strings.Join(names, " and ")
}

// familyOf returns the family of an address or prefix in text form, and
// false when it is neither.
func familyOf(s string) (family, bool) {
	a, err := netip.ParseAddr(s)
	if err != nil {
		p, perr := netip.ParsePrefix(s)
		if perr != nil {
			return "", false
		}
		a = p.Addr()
	}
	if a.Unmap().Is4() {
		return ipv4, true
	}
	return ipv6, true
}

// prefixString returns p in CIDR notation, or "" when p is not set (a
// family the lab does not have).
func prefixString(p netip.Prefix) string {
	if !p.IsValid() {
		return ""
	}
	return p.String()
}

// joinSet joins the non-empty strings with spaces: the addresses of a
// dual-stack host or container, "-" when there is none.
func joinSet(s ...string) string {
	var set []string
	for _, x := range s {
		if x != "" {
			set = append(set, x)
		}
	}
	if len(set) == 0 {
		return "-"
	}
	return strings.Join(set, " ")
}
