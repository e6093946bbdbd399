package probe

import (
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

// TestRateBound: 500 peers that never answer (each round costs 4
// datagrams: the overlay probe twice, the underlay probe twice) want far
// more than the bound of 50 datagrams a second; what is sent, by the
// prober's count and by the sink's, stays within it.
func TestRateBound(t *testing.T) {
	const (
		peers  = 500
		rate   = 50
		burst  = 2
		window = 3 * time.Second
	)
	e := newSinkEnv(t)
	cfg := fastConfig(t, e.host)
	cfg.Rate, cfg.Burst, cfg.Timeout, cfg.Interval = rate, burst, 200*time.Millisecond, 100*time.Millisecond
	var ps []Peer
	for i := range peers {
		ps = append(ps, sinkPeer(i))
	}
	p := startProber(t, cfg, ps)
	await.Eventually(t, 5*time.Second, "all peers probed", func() error {
		if st := p.Status(); len(st.Peers) != peers || st.Sent < 2*rate {
			return fmt.Errorf("%d peers, %d sent", len(st.Peers), st.Sent)
		}
		return nil
	})
	if got, want := p.Status().Interval, peers*2*time.Second/rate; got != want {
		t.Errorf("interval %v, want %v (500 peers × 2 datagrams at 50/s)", got, want)
	}
	sent0, arrived0, t0 := p.Status().Sent, e.arrived(t), time.Now()
	time.Sleep(window) // measuring a rate over a fixed window
	sent1, arrived1, elapsed := p.Status().Sent, e.arrived(t), time.Since(t0)
	sent, arrived := sent1-sent0, arrived1-arrived0
	bound := uint64(rate*elapsed.Seconds()) + burst + 1
	t.Logf("over %v: prober sent %d (%.1f/s), sink counted %d (%.1f/s); bound %d/s",
		elapsed.Round(time.Millisecond), sent, float64(sent)/elapsed.Seconds(), arrived, float64(arrived)/elapsed.Seconds(), rate)
	if sent > bound || arrived > bound {
		t.Errorf("sent %d, arrived %d in %v: over the bound of %d", sent, arrived, elapsed, bound)
	}
	// The demand is well above the bound, so the prober must be using it.
	if float64(sent) < 0.8*rate*elapsed.Seconds() {
		t.Errorf("sent %d in %v: the prober is not busy, the bound was not exercised", sent, elapsed)
	}
	if d := int64(arrived) - int64(sent); d < -burst-4 || d > burst+4 {
		t.Errorf("sink counted %d, prober %d: they should agree", arrived, sent)
	}
	for _, h := range p.Status().Peers {
		if h.Probed && (h.Reachable || h.Cause != CauseUnderlayUnreachable) {
			t.Fatalf("%s: %+v; want underlay-unreachable", h.Subnet, h)
		}
	}
}
