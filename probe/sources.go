package probe

import (
	"net/netip"
	"slices"
)

// Sources is the set of addresses a Responder answers: the cluster's
// hosts. An address is in it when it is one of Addrs (the leases'
// PublicIP and PublicIPv6) or lies inside one of Subnets (the leases'
// subnets, this host's own included, where the peers' overlay addresses
// are). A Sources is built once per change of the leases and read by
// every datagram: Allows is a binary search of the addresses and one per
// distinct subnet length (one per address family in a cluster, whose
// leases share SubnetLen). Sorted slices hold 5,000 hosts in a third of
// the memory of maps.
type Sources struct {
	addrs   []netip.Addr
	subnets []netip.Prefix
	bits    []int
}

// NewSources returns the set of addrs and of the addresses inside
// subnets. Invalid entries are left out; IPv4-mapped IPv6 addresses are
// taken as IPv4.
func NewSources(addrs []netip.Addr, subnets []netip.Prefix) *Sources {
	s := &Sources{addrs: make([]netip.Addr, 0, len(addrs)), subnets: make([]netip.Prefix, 0, len(subnets))}
	for _, a := range addrs {
		if a.IsValid() {
			s.addrs = append(s.addrs, a.Unmap())
		}
	}
	for _, p := range subnets {
		if !p.IsValid() {
			continue
		}
		p = p.Masked()
		s.subnets = append(s.subnets, p)
		if b := p.Bits(); !slices.Contains(s.bits, b) {
			s.bits = append(s.bits, b)
		}
	}
	slices.SortFunc(s.addrs, netip.Addr.Compare)
	s.addrs = slices.Clip(slices.Compact(s.addrs))
	slices.SortFunc(s.subnets, comparePrefix)
	s.subnets = slices.Clip(slices.Compact(s.subnets))
	return s
}

// Allows reports whether a is in the set; a nil Sources allows every
// address.
func (s *Sources) Allows(a netip.Addr) bool {
	if s == nil {
		return true
	}
	a = a.Unmap()
	if _, ok := slices.BinarySearchFunc(s.addrs, a, netip.Addr.Compare); ok {
		return true
	}
	for _, b := range s.bits {
		if b > a.BitLen() {
			continue
		}
		p, err := a.Prefix(b)
		if err != nil {
			continue
		}
		if _, ok := slices.BinarySearchFunc(s.subnets, p, comparePrefix); ok {
			return true
		}
	}
	return false
}

// Len is the number of addresses and subnets in the set.
func (s *Sources) Len() int {
	if s == nil {
		return 0
	}
	return len(s.addrs) + len(s.subnets)
}

// Equal reports whether s and o hold the same addresses and subnets.
func (s *Sources) Equal(o *Sources) bool {
	if s == nil || o == nil {
		return s == o
	}
	return slices.Equal(s.addrs, o.addrs) && slices.Equal(s.subnets, o.subnets)
}
