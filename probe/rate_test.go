package probe

import (
	"context"
	"fmt"
	"net/netip"
	"regexp"
	"strconv"
	"testing"
	"time"

	"github.com/netagent/netagent/internal/await"
	"github.com/netagent/netagent/internal/nstest"
)

// sinkPeer is the i-th simulated peer: lease 10.<1+i/256>.<i%256>.0/24,
// public IP 172.16.<i/256>.<i%256+1>.
func sinkPeer(i int) Peer {
	sub := netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(1 + i/256), byte(i % 256), 0}), 24)
	pub := netip.AddrFrom4([4]byte{172, 16, byte(i / 256), byte(i%256 + 1)})
	return Peer{Subnet: sub, Overlay: OverlayAddr("vxlan", sub), PublicIP: pub}
}

// sinkEnv is a prober host whose routes to every peer lead to a "sink"
// namespace, which counts (nft counter "probes") and drops every probe.
type sinkEnv struct {
	host *host
	sink *nstest.NS
}

func newSinkEnv(tb testing.TB) *sinkEnv {
	tb.Helper()
	h := &host{i: 1, ns: nstest.NewNS(tb, "p")}
	sink := nstest.NewNS(tb, "sink")
	nstest.Veth(tb, h.ns, "eth0", sink, "eth0")
	h.ns.IP(tb, "addr", "add", "192.168.91.1/24", "dev", "eth0")
	h.ns.IP(tb, "addr", "add", h.overlay().String()+"/32", "dev", "lo")
	sink.IP(tb, "addr", "add", "192.168.91.2/24", "dev", "eth0")
	for _, dst := range []string{"10.0.0.0/8", "172.16.0.0/12"} {
		h.ns.IP(tb, "route", "add", dst, "via", "192.168.91.2")
	}
	out, err := execIn(sink, "nft", "add table ip natest { counter probes { }; chain pre { type filter hook prerouting priority -300; udp dport 8473 counter name probes drop; }; }")
	if err != nil {
		tb.Fatalf("nft: %v: %s", err, out)
	}
	return &sinkEnv{host: h, sink: sink}
}

var packetsRE = regexp.MustCompile(`packets (\d+)`)

// arrived is the number of probes the sink has counted.
func (e *sinkEnv) arrived(tb testing.TB) uint64 {
	out, err := execIn(e.sink, "nft", "list", "counter", "ip", "natest", "probes")
	m := packetsRE.FindStringSubmatch(out)
	if err != nil || m == nil {
		tb.Fatalf("nft list counter: %v: %s", err, out)
	}
	n, _ := strconv.ParseUint(m[1], 10, 64)
	return n
}

// TestRateBound: 100 peers that never answer (each round costs 4
// datagrams: the overlay probe twice, the underlay probe twice) want twice
// the bound of 100 datagrams a second. Whenever it is looked at, what was
// sent since the prober was made, by the prober's count and by the sink's,
// is within burst + rate × the time since; senders queue on the limiter
// (the bound is what holds them back); every peer is probed in the end and
// found underlay-unreachable; and once the prober has stopped, the sink
// counted exactly what the prober says it sent. No rate is measured here:
// BenchmarkProbeRate does that.
func TestRateBound(t *testing.T) {
	const (
		peers = 100
		rate  = 100
		burst = 2
	)
	e := newSinkEnv(t)
	cfg := fastConfig(t, e.host)
	cfg.Rate, cfg.Burst, cfg.Timeout, cfg.Interval = rate, burst, 200*time.Millisecond, 100*time.Millisecond
	var ps []Peer
	for i := range peers {
		ps = append(ps, sinkPeer(i))
	}
	made := time.Now() // before the limiter is: the bound counts from here
	p, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	p.SetPeers(ps)
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	ran := make(chan error, 1)
	go func() { ran <- p.Run(ctx) }()

	// overBound says whether n datagrams, counted at some point before
	// now, are more than the limiter can have let through since made.
	overBound := func(what string, n uint64) error {
		since := time.Since(made)
		if bound := burst + rate*since.Seconds(); float64(n) > bound {
			return fmt.Errorf("%s %d datagrams %v after the prober was made: over the bound of %.1f", what, n, since, bound)
		}
		return nil
	}
	var violation error
	check := func() {
		if err := overBound("prober sent", p.Status().Sent); err != nil && violation == nil {
			violation = err
		}
		if err := overBound("sink counted", e.arrived(t)); err != nil && violation == nil {
			violation = err
		}
	}
	queued := false
	await.Eventually(t, 120*time.Second, "every peer probed within the rate bound", func() error {
		check()
		// Tokens below zero: sends are waiting for their turn.
		queued = queued || p.lim.Tokens() < 0
		st := p.Status()
		probed := 0
		for _, h := range st.Peers {
			if h.Probed {
				probed++
			}
		}
		if len(st.Peers) != peers || probed != peers || !queued {
			return fmt.Errorf("%d peers, %d probed, %d sent, senders queued on the limiter: %t", len(st.Peers), probed, st.Sent, queued)
		}
		return nil
	})
	check()
	if violation != nil {
		t.Error(violation)
	}
	st := p.Status()
	if got, want := st.Interval, peers*2*time.Second/rate; got != want {
		t.Errorf("interval %v, want %v (%d peers × 2 datagrams at %d/s)", got, want, peers, rate)
	}
	for _, h := range st.Peers {
		if !h.Probed || h.Reachable || h.Cause != CauseUnderlayUnreachable {
			t.Errorf("%s: %+v; want underlay-unreachable", h.Subnet, h)
		}
	}

	// Stopped, the prober sends no more: the sink ends up with exactly
	// what it counted.
	cancel()
	if err := <-ran; err != nil {
		t.Fatalf("Run: %v", err)
	}
	sent := p.Status().Sent
	await.Eventually(t, 30*time.Second, "the sink's count equal to the prober's", func() error {
		if arrived := e.arrived(t); arrived != sent {
			return fmt.Errorf("sink counted %d, prober sent %d: they should agree", arrived, sent)
		}
		return nil
	})
	t.Logf("%d datagrams sent and counted for %d peers", sent, peers)
}
