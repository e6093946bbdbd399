package scalesim

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"time"
)

// Spread is a distribution of delays.
type Spread struct {
	P50, P99, Max time.Duration
	N             int
}

func spreadOf(d []time.Duration) Spread {
	if len(d) == 0 {
		return Spread{}
	}
	slices.Sort(d)
	at := func(q float64) time.Duration { return d[min(len(d)-1, int(q*float64(len(d))))] }
	return Spread{P50: at(0.5), P99: at(0.99), Max: d[len(d)-1], N: len(d)}
}

func (s Spread) String() string {
	r := func(d time.Duration) string { return d.Round(time.Millisecond).String() }
	return fmt.Sprintf("p50 %s p99 %s max %s", r(s.P50), r(s.P99), r(s.Max))
}

// ProbeResult is what one new lease took to reach every watch.
type ProbeResult struct {
	// Acquired is how long the new host's acquisition took.
	Acquired time.Duration
	// Seen is, over every watch, the delay from the start of the
	// acquisition until the watch had the new subnet.
	Seen Spread
}

// Probe starts one more host (without a watch) on a free subnet known in
// advance (the top free one of the pool, given as its previous subnet,
// which acquisition prefers) and waits until every watch has it. The
// delays run from the start of the acquisition.
func (s *Sim) Probe(ctx context.Context) (ProbeResult, error) {
	taken := map[netip.Prefix]bool{}
	for _, h := range s.Hosts {
		if hd := h.Holder(); hd != nil {
			taken[hd.Lease().Subnet] = true
		}
	}
	ref := newSink(s.Cfg)
	var p netip.Prefix
	top := ipv4(s.Cfg.SubnetMax.Addr())
	for i := uint32(0); ; i++ {
		a := top - i<<ref.shift
		q := netip.PrefixFrom(netip.AddrFrom4([4]byte{byte(a >> 24), byte(a >> 16), byte(a >> 8), byte(a)}), s.Cfg.SubnetLen)
		if !taken[q] {
			p = q
			break
		}
	}
	h, err := s.AddHost()
	if err != nil {
		return ProbeResult{}, err
	}
	h.opts.Previous = p
	var sinks []*Sink
	for _, o := range s.Hosts {
		if o.Sink != nil && o.Holder() != nil {
			o.Sink.timeFor(p)
			sinks = append(sinks, o.Sink)
		}
	}
	start := time.Now()
	s.Run(h.ID, h.ID+1)
	var res ProbeResult
	if err := Await(ctx, func() error {
		hd := h.Holder()
		if hd == nil {
			return fmt.Errorf("the probe host holds no lease yet")
		}
		if res.Acquired == 0 {
			res.Acquired = time.Since(start)
		}
		if got := hd.Lease().Subnet; got != p {
			return fmt.Errorf("the probe host holds %v, not %v", got, p)
		}
		n := 0
		for _, k := range sinks {
			if k.seenAt.Load() != 0 {
				n++
			}
		}
		if n < len(sinks) {
			return fmt.Errorf("%d of %d watches have %v", n, len(sinks), p)
		}
		return nil
	}); err != nil {
		return res, err
	}
	d := make([]time.Duration, 0, len(sinks))
	for _, k := range sinks {
		d = append(d, time.Unix(0, k.seenAt.Load()).Sub(start))
	}
	res.Seen = spreadOf(d)
	return res, nil
}

// WatchRestarts is the sum over hosts of the lease watches that broke and
// were listed again.
func (s *Sim) WatchRestarts() (n uint64) {
	for _, h := range s.Hosts {
		n += h.reg.Stats().WatchRestarts
	}
	return n
}

// Renewals is the sum over hosts of successful lease renewals.
func (s *Sim) Renewals() (n uint64) {
	for _, h := range s.Hosts {
		n += h.reg.Stats().Renewals
	}
	return n
}

// Watchers is the number of hosts running the lease watch.
func (s *Sim) Watchers() int { return s.opts.Watchers }

// CutOff cuts the last of the lab's host namespaces (a third of the hosts
// with 3 namespaces) off from every etcd member: their packets are
// dropped, as a broken link would. Heal undoes it.
func (s *Sim) CutOff(ctx context.Context) error {
	var addrs []netip.Addr
	for _, m := range s.Cluster.Members {
		addrs = append(addrs, m.Addr)
	}
	nss := s.Lab.Hosts()
	return s.Lab.Partition(ctx, nss[len(nss)-1].NS, addrs...)
}

// Heal reconnects what CutOff cut off.
func (s *Sim) Heal(ctx context.Context) error {
	nss := s.Lab.Hosts()
	return s.Lab.Heal(ctx, nss[len(nss)-1].NS)
}

// CutOffHosts is the number of hosts CutOff cuts off.
func (s *Sim) CutOffHosts() (n int) {
	nss := s.Lab.Hosts()
	for _, h := range s.Hosts {
		if h.NS == nss[len(nss)-1].NS {
			n++
		}
	}
	return n
}
