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
// every datagram: Allows is a map lookup per distinct subnet length (one
// per address family in a cluster, whose leases share SubnetLen).
type Sources struct {
	addrs   map[netip.Addr]struct{}
	subnets map[netip.Prefix]struct{}
	bits    []int
}

// NewSources returns the set of addrs and of the addresses inside
// subnets. Invalid entries are left out; IPv4-mapped IPv6 addresses are
// taken as IPv4.
func NewSources(addrs []netip.Addr, subnets []netip.Prefix) *Sources {
	s := &Sources{addrs: make(map[netip.Addr]struct{}, len(addrs)), subnets: make(map[netip.Prefix]struct{}, len(subnets))}
	for _, a := range addrs {
		if a.IsValid() {
			s.addrs[a.Unmap()] = struct{}{}
		}
	}
	for _, p := range subnets {
		if !p.IsValid() {
			continue
		}
		p = p.Masked()
		s.subnets[p] = struct{}{}
		if b := p.Bits(); !slices.Contains(s.bits, b) {
			s.bits = append(s.bits, b)
		}
	}
	return s
}

// Allows reports whether a is in the set; a nil Sources allows every
// address.
func (s *Sources) Allows(a netip.Addr) bool {
	if s == nil {
		return true
	}
	a = a.Unmap()
	if _, ok := s.addrs[a]; ok {
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
		if _, ok := s.subnets[p]; ok {
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
	if len(s.addrs) != len(o.addrs) || len(s.subnets) != len(o.subnets) {
		return false
	}
	for a := range s.addrs {
		if _, ok := o.addrs[a]; !ok {
			return false
		}
	}
	for p := range s.subnets {
		if _, ok := o.subnets[p]; !ok {
			return false
		}
	}
	return true
}
