package probe

import (
	"fmt"
	"net/netip"
	"testing"
	"time"
)

func TestScheduleOrderAndStaleEntries(t *testing.T) {
	p := &Prober{peers: map[netip.Prefix]*peerState{}}
	t0 := time.Unix(1000, 0)
	sn := func(i int) netip.Prefix { return netip.MustParsePrefix(fmt.Sprintf("10.5.%d.0/24", i)) }
	for i, d := range []time.Duration{5, 1, 3, 2, 4} {
		ps := &peerState{Peer: Peer{Subnet: sn(i)}}
		p.peers[sn(i)] = ps
		p.setDue(ps, t0.Add(d*time.Second))
	}
	// Peer 1 (due at 1 s) is rescheduled to 6 s, peer 3 (2 s) is gone,
	// peer 2 (3 s) is in a round: their old entries must not come out.
	p.setDue(p.peers[sn(1)], t0.Add(6*time.Second))
	delete(p.peers, sn(3))
	p.peers[sn(2)].inFlight = true

	if k, next := p.popDue(t0); k.IsValid() || !next.Equal(t0.Add(4*time.Second)) {
		t.Fatalf("popDue(t0) = %v, %v; want none due, next at 4 s", k, next.Sub(t0))
	}
	var got []netip.Prefix
	for {
		k, _ := p.popDue(t0.Add(time.Minute))
		if !k.IsValid() {
			break
		}
		got = append(got, k)
		p.peers[k].inFlight = true
	}
	want := []netip.Prefix{sn(4), sn(0), sn(1)}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("due in order: %v, want %v", got, want)
	}
}

func TestScheduleStaysBounded(t *testing.T) {
	p := &Prober{peers: map[netip.Prefix]*peerState{}}
	t0 := time.Unix(1000, 0)
	k := netip.MustParsePrefix("10.5.1.0/24")
	ps := &peerState{Peer: Peer{Subnet: k}}
	p.peers[k] = ps
	// A peer rescheduled over and over without its entries reaching the
	// top (each later than the last).
	for i := range 10000 {
		p.setDue(ps, t0.Add(time.Duration(i)*time.Second))
	}
	if n := len(p.sched); n > 2*len(p.peers)+64 {
		t.Errorf("%d entries for one peer", n)
	}
	if got, _ := p.popDue(t0.Add(time.Hour * 10)); got != k {
		t.Errorf("popDue = %v, want %v", got, k)
	}
	if got, next := p.popDue(t0.Add(time.Hour * 10)); got.IsValid() || !next.IsZero() {
		t.Errorf("after its live entry was taken: popDue = %v, %v; want nothing", got, next)
	}
}
