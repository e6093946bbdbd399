package probe

import (
	"container/heap"
	"net/netip"
	"time"
)

// dueEntry says that peer is due for a round at at: a pointer, not the
// peer's subnet, so that an entry is 32 bytes, not 56.
type dueEntry struct {
	at   time.Time
	peer *peerState
}

// schedule is a min-heap of due times, so that the prober's loop finds
// the next peers to probe without looking at the others. An entry is not
// removed when its peer goes, is rescheduled or starts a round: it is
// stale once the peer's own due time says otherwise, and is dropped when
// it comes to the top (Prober.popDue).
type schedule []dueEntry

func (s schedule) Len() int           { return len(s) }
func (s schedule) Less(i, j int) bool { return s[i].at.Before(s[j].at) }
func (s schedule) Swap(i, j int)      { s[i], s[j] = s[j], s[i] }
func (s *schedule) Push(x any)        { *s = append(*s, x.(dueEntry)) }
func (s *schedule) Pop() any {
	old := *s
	e := old[len(old)-1]
	old[len(old)-1] = dueEntry{}
	*s = old[:len(old)-1]
	return e
}

// setDue schedules the next round of ps at at. p.mu must be held.
func (p *Prober) setDue(ps *peerState, at time.Time) {
	ps.due = at
	heap.Push(&p.sched, dueEntry{at, ps})
	if len(p.sched) > 2*len(p.peers)+64 {
		// Mostly stale entries (peers rescheduled many times, or gone):
		// rebuild from the peers.
		clear(p.sched)
		p.sched = p.sched[:0]
		for _, ps := range p.peers {
			if !ps.inFlight {
				p.sched = append(p.sched, dueEntry{ps.due, ps})
			}
		}
		heap.Init(&p.sched)
	}
}

// popDue returns the subnet of a peer due at now, taking it off the
// schedule, or, when none is due, the time the next one will be (zero if
// none is scheduled). p.mu must be held.
func (p *Prober) popDue(now time.Time) (netip.Prefix, time.Time) {
	for len(p.sched) > 0 {
		top := p.sched[0]
		ps := top.peer
		if p.peers[ps.Subnet] != ps || ps.inFlight || !ps.due.Equal(top.at) {
			heap.Pop(&p.sched)
			continue
		}
		if top.at.After(now) {
			return netip.Prefix{}, top.at
		}
		heap.Pop(&p.sched)
		return ps.Subnet, time.Time{}
	}
	return netip.Prefix{}, time.Time{}
}
