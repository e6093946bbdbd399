package subnet

import (
	"fmt"
	"math/big"
	"math/rand/v2"
	"net/netip"
	"slices"

	"github.com/netagent/netagent/lease"
)

// smallPool is the pool size up to which a nearly full pool is enumerated
// to draw among its free subnets; a larger one is searched for its first
// gap.
const smallPool = 1 << 16

// sampleTries is how many random candidates are drawn before falling back
// to an exact search.
const sampleTries = 64

// pool is the range of subnets of one address family that may be leased:
// every prefix of length bits from min to max.
type pool struct {
	min, max netip.Prefix
	bits     int
}

func (p pool) String() string { return p.min.String() + ".." + p.max.String() }

// shift is the number of host bits of a subnet of the pool.
func (p pool) shift() uint { return uint(p.min.Addr().BitLen() - p.bits) }

// contains reports whether q is one of the pool's subnets.
func (p pool) contains(q netip.Prefix) bool {
	return q.IsValid() && q.Bits() == p.bits && q.Addr().Is4() == p.min.Addr().Is4() &&
		q.Masked() == q && p.min.Addr().Compare(q.Addr()) <= 0 && q.Addr().Compare(p.max.Addr()) <= 0
}

// size is the number of subnets in the pool.
func (p pool) size() *big.Int {
	n := p.offset(p.max.Addr())
	return n.Add(n, big.NewInt(1))
}

// offset is the index of the subnet holding a (which must not be below
// min).
func (p pool) offset(a netip.Addr) *big.Int {
	n := addrInt(a)
	n.Sub(n, addrInt(p.min.Addr()))
	return n.Rsh(n, p.shift())
}

// nth is the pool's subnet of index i.
func (p pool) nth(i *big.Int) netip.Prefix {
	n := new(big.Int).Lsh(i, p.shift())
	n.Add(n, addrInt(p.min.Addr()))
	buf := make([]byte, p.min.Addr().BitLen()/8)
	n.FillBytes(buf)
	a, _ := netip.AddrFromSlice(buf)
	return netip.PrefixFrom(a, p.bits)
}

func addrInt(a netip.Addr) *big.Int { return new(big.Int).SetBytes(a.AsSlice()) }

// lastAddr is the last address of prefix q.
func lastAddr(q netip.Prefix) netip.Addr {
	b := q.Masked().Addr().AsSlice()
	for i := q.Bits(); i < len(b)*8; i++ {
		b[i/8] |= 0x80 >> (i % 8)
	}
	a, _ := netip.AddrFromSlice(b)
	return a
}

// takenSet is the set of subnets that some key under <prefix>/subnets/
// names, whatever its value.
type takenSet struct {
	exact map[netip.Prefix]struct{}
	// odd holds subnets whose length differs from the pool's of their
	// family (left from an older config): they block what they overlap.
	odd []netip.Prefix
}

func newTakenSet(cfg *lease.Config, entries []entry) *takenSet {
	t := &takenSet{exact: make(map[netip.Prefix]struct{}, len(entries))}
	add := func(q netip.Prefix, bits int) {
		if !q.IsValid() {
			return
		}
		if q.Bits() == bits {
			t.exact[q] = struct{}{}
		} else {
			t.odd = append(t.odd, q)
		}
	}
	for _, e := range entries {
		add(e.lease.Subnet, cfg.SubnetLen)
		add(e.lease.IPv6Subnet, cfg.IPv6SubnetLen)
	}
	return t
}

// free reports whether no key names q or a subnet overlapping it.
func (t *takenSet) free(q netip.Prefix) bool {
	if _, ok := t.exact[q]; ok {
		return false
	}
	for _, o := range t.odd {
		if o.Overlaps(q) {
			return false
		}
	}
	return true
}

// pick chooses a free subnet of p: prefer when it is one of p's and free,
// else one drawn at random among the free ones. It returns an error
// wrapping ErrPoolExhausted when none is free.
func (p pool) pick(t *takenSet, prefer netip.Prefix) (netip.Prefix, error) {
	if p.contains(prefer) && t.free(prefer) {
		return prefer, nil
	}
	// Rejection sampling draws uniformly among the free subnets and is
	// cheap while the pool is not nearly full.
	size := p.size()
	for range sampleTries {
		if q := p.nth(randBelow(size)); t.free(q) {
			return q, nil
		}
	}
	if size.IsInt64() && size.Int64() <= smallPool {
		var free []netip.Prefix
		for i := range size.Int64() {
			if q := p.nth(big.NewInt(i)); t.free(q) {
				free = append(free, q)
			}
		}
		if len(free) == 0 {
			return netip.Prefix{}, p.exhausted(size)
		}
		return free[rand.N(len(free))], nil
	}
	if i := p.firstGap(t, size); i != nil {
		return p.nth(i), nil
	}
	return netip.Prefix{}, p.exhausted(size)
}

func (p pool) exhausted(size *big.Int) error {
	return fmt.Errorf("%w: all %s subnets of %s are leased", ErrPoolExhausted, size, p)
}

// firstGap returns the lowest index of a free subnet, or nil, by sorting
// the taken ranges: exact and linear in the number of taken subnets.
func (p pool) firstGap(t *takenSet, size *big.Int) *big.Int {
	type span struct{ lo, hi *big.Int }
	var spans []span
	lastIdx := new(big.Int).Sub(size, big.NewInt(1))
	for q := range t.exact {
		if p.contains(q) {
			i := p.offset(q.Addr())
			spans = append(spans, span{i, i})
		}
	}
	for _, o := range t.odd {
		if o.Addr().Is4() != p.min.Addr().Is4() {
			continue
		}
		first, last := o.Masked().Addr(), lastAddr(o)
		if last.Compare(p.min.Addr()) < 0 || first.Compare(lastAddr(p.max)) > 0 {
			continue
		}
		lo, hi := big.NewInt(0), lastIdx
		if first.Compare(p.min.Addr()) > 0 {
			lo = p.offset(first)
		}
		if last.Compare(lastAddr(p.max)) < 0 {
			hi = p.offset(last)
		}
		spans = append(spans, span{lo, hi})
	}
	slices.SortFunc(spans, func(a, b span) int { return a.lo.Cmp(b.lo) })
	next := big.NewInt(0) // lowest index not known to be taken
	for _, s := range spans {
		if s.lo.Cmp(next) > 0 {
			break
		}
		if s.hi.Cmp(next) >= 0 {
			next = new(big.Int).Add(s.hi, big.NewInt(1))
		}
	}
	if next.Cmp(size) < 0 {
		return next
	}
	return nil
}

// randBelow returns a uniformly drawn integer in [0, n), n > 0.
func randBelow(n *big.Int) *big.Int {
	bits := n.BitLen()
	buf := make([]byte, (bits+7)/8)
	for {
		for i := range buf {
			buf[i] = byte(rand.Uint32())
		}
		if extra := len(buf)*8 - bits; extra > 0 {
			buf[0] &= 0xff >> extra
		}
		if x := new(big.Int).SetBytes(buf); x.Cmp(n) < 0 {
			return x
		}
	}
}
