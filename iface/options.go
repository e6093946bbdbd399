package iface

import (
	"errors"
	"fmt"
	"net/netip"
	"regexp"
	"strings"
)

// Options says how to choose the external interface. The zero value with a
// family enabled means "the interface of the default route".
//
// Precedence, as in flanneld: Ifaces are tried in order, then IfaceRegex in
// order; CanReach is used only when both are empty; the default route only
// when all three are empty. The first candidate that is usable wins (see
// Select).
type Options struct {
	// Ifaces holds --iface values: an interface name, or an IP address
	// held by the interface (which then becomes its Addr or AddrV6).
	Ifaces []string
	// IfaceRegex holds --iface-regex values. Each is matched against the
	// string form of every eligible address of every interface first,
	// then against every interface name.
	IfaceRegex []string
	// CanReach is --iface-can-reach: the interface, and the source
	// address, the kernel would use to reach this address.
	CanReach netip.Addr
	// PublicIP and PublicIPv6 are --public-ip and --public-ipv6: the
	// addresses published in the lease instead of the interface's (NAT).
	// They need not be assigned to any interface.
	PublicIP, PublicIPv6 netip.Addr
	// EnableIPv4 and EnableIPv6 say which families are needed; at least
	// one must be set.
	EnableIPv4, EnableIPv6 bool
}

// plan is Options checked and compiled.
type plan struct {
	Options
	regexps []*regexp.Regexp
}

// Validate reports whether the options are consistent: a family is enabled,
// every --iface is non-empty, every --iface-regex compiles, and the public
// addresses are of the right, enabled family. Select and SelectWait call
// it; flag parsing can call it to fail early.
func (o Options) Validate() error {
	_, err := o.compile()
	return err
}

func (o Options) compile() (*plan, error) {
	if !o.EnableIPv4 && !o.EnableIPv6 {
		return nil, errors.New("iface: neither IPv4 nor IPv6 is enabled")
	}
	for _, s := range o.Ifaces {
		if strings.TrimSpace(s) == "" {
			return nil, errors.New("iface: empty --iface value")
		}
	}
	p := &plan{Options: o}
	for _, s := range o.IfaceRegex {
		re, err := regexp.Compile(s)
		if err != nil {
			return nil, fmt.Errorf("iface: --iface-regex %q: %w", s, err)
		}
		p.regexps = append(p.regexps, re)
	}
	if o.PublicIP.IsValid() {
		if !o.PublicIP.Unmap().Is4() {
			return nil, fmt.Errorf("iface: --public-ip %s is not an IPv4 address", o.PublicIP)
		}
		if !o.EnableIPv4 {
			return nil, fmt.Errorf("iface: --public-ip %s given but IPv4 is not enabled", o.PublicIP)
		}
		p.PublicIP = o.PublicIP.Unmap()
	}
	if o.PublicIPv6.IsValid() {
		if !o.PublicIPv6.Is6() || o.PublicIPv6.Is4In6() {
			return nil, fmt.Errorf("iface: --public-ipv6 %s is not an IPv6 address", o.PublicIPv6)
		}
		if !o.EnableIPv6 {
			return nil, fmt.Errorf("iface: --public-ipv6 %s given but IPv6 is not enabled", o.PublicIPv6)
		}
	}
	if o.CanReach.IsValid() {
		p.CanReach = o.CanReach.Unmap()
	}
	return p, nil
}
