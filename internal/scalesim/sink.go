package scalesim

import (
	"math/bits"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/netagent/netagent/lease"
)

// Sink stands in for the kernel behind one host's lease watch: it keeps
// the set of IPv4 subnets it was given as a bitmap over the pool (8 KiB
// for the 65,536 /24s of a /8), so that thousands of sinks fit in memory,
// and counts what it was given.
type Sink struct {
	base    uint32 // the network's first address
	shift   int    // 32 - SubnetLen
	mu      sync.Mutex
	set     []uint64
	n       int
	rev     int64
	batches uint64
	events  uint64
	// target is a subnet index (-1 none) whose first arrival is timed
	// in seenAt (Unix nanoseconds).
	target atomic.Int64
	seenAt atomic.Int64
}

func newSink(cfg *lease.Config) *Sink {
	pool := uint64(1) << (cfg.SubnetLen - cfg.Network.Bits())
	s := &Sink{
		base:  ipv4(cfg.Network.Addr()),
		shift: 32 - cfg.SubnetLen,
		set:   make([]uint64, (pool+63)/64),
	}
	s.target.Store(-1)
	return s
}

func ipv4(a netip.Addr) uint32 {
	b := a.As4()
	return uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
}

// index is p's position in the pool, or -1 when p is not in the network.
func (s *Sink) index(p netip.Prefix) int64 {
	if !p.IsValid() || !p.Addr().Is4() {
		return -1
	}
	i := int64((ipv4(p.Addr()) - s.base) >> s.shift)
	if i < 0 || i >= int64(len(s.set))*64 {
		return -1
	}
	return i
}

// apply takes one batch of the lease watch.
func (s *Sink) apply(b lease.Batch) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.batches++
	s.events += uint64(len(b.Events))
	if b.Snapshot {
		clear(s.set)
		s.n = 0
	}
	target := s.target.Load()
	for _, ev := range b.Events {
		i := s.index(ev.Lease.Subnet)
		if i < 0 {
			continue
		}
		w, bit := i/64, uint64(1)<<(i%64)
		had := s.set[w]&bit != 0
		if ev.Type == lease.EventRemoved {
			if had {
				s.set[w] &^= bit
				s.n--
			}
			continue
		}
		if !had {
			s.set[w] |= bit
			s.n++
		}
		if i == target {
			s.seenAt.CompareAndSwap(0, time.Now().UnixNano())
		}
	}
	s.rev = b.Revision
}

// Len is the number of subnets the sink holds now.
func (s *Sink) Len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.n
}

// Revision is the store revision of the last batch taken.
func (s *Sink) Revision() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.rev
}

// Has reports whether the sink holds p.
func (s *Sink) Has(p netip.Prefix) bool {
	i := s.index(p)
	if i < 0 {
		return false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.set[i/64]&(1<<(i%64)) != 0
}

// Equal reports whether the sink holds exactly the subnets of want (a
// bitmap built by bitmapOf).
func (s *Sink) equal(want []uint64) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i := range want {
		if s.set[i] != want[i] {
			return false
		}
	}
	return true
}

// Counts returns how many batches and events the sink took.
func (s *Sink) Counts() (batches, events uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.batches, s.events
}

// timeFor starts timing the first arrival of p.
func (s *Sink) timeFor(p netip.Prefix) {
	s.seenAt.Store(0)
	s.target.Store(s.index(p))
	if s.Has(p) {
		s.seenAt.CompareAndSwap(0, time.Now().UnixNano())
	}
}

func popcount(set []uint64) (n int) {
	for _, w := range set {
		n += bits.OnesCount64(w)
	}
	return n
}
