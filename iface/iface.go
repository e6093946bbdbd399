// Package iface chooses the external (underlay) interface and public
// address the agent uses, the way flanneld does: the default route's
// interface by default, or --iface, --iface-regex or --iface-can-reach.
package iface

import "net/netip"

// External is the host's underlay interface and the addresses the agent
// uses on it.
type External struct {
	// Name, Index and MTU describe the interface.
	Name  string
	Index int
	MTU   int
	// Addr is the interface's IPv4 address the agent uses (the VXLAN
	// local address); invalid when the host has none.
	Addr netip.Addr
	// PublicIP is the address published in the lease: Addr, or
	// --public-ip when the host is behind NAT.
	PublicIP netip.Addr
	// AddrV6 and PublicIPv6 are the same for IPv6, invalid when unused.
	AddrV6     netip.Addr
	PublicIPv6 netip.Addr
}
