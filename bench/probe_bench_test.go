package bench

import (
	"context"
	"fmt"
	"net/netip"
	"regexp"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/netagent/netagent/internal/nstest"
	"github.com/netagent/netagent/probe"
)

// prHost is one host of the probing benchmarks: 192.168.93.<i> on eth0,
// flannel.1 with 10.8.<i>.0/32.
type prHost struct {
	i  int
	ns *nstest.NS
}

func (h prHost) public() netip.Addr { return netip.AddrFrom4([4]byte{192, 168, 93, byte(h.i)}) }
func (h prHost) peer() probe.Peer {
	sub := netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 8, byte(h.i), 0}), 24)
	return probe.Peer{Subnet: sub, Overlay: probe.OverlayAddr("vxlan", sub), PublicIP: h.public()}
}
func (h prHost) mac() string { return "02:00:00:00:08:0" + string(rune('0'+h.i)) }

// prPair is two hosts joined by a veth pair, with flannel.1 programmed
// towards each other as the vxlan backend does, and a responder each.
func prPair(b *testing.B) (prHost, prHost) {
	a, c := prHost{1, nstest.NewNS(b, "pa")}, prHost{2, nstest.NewNS(b, "pb")}
	nstest.Veth(b, a.ns, "eth0", c.ns, "eth0")
	for _, h := range []prHost{a, c} {
		h.ns.IP(b, "addr", "add", h.public().String()+"/24", "dev", "eth0")
		h.ns.IP(b, "link", "add", "flannel.1", "address", h.mac(), "type", "vxlan", "id", "1",
			"local", h.public().String(), "dev", "eth0", "dstport", "8472", "nolearning")
		h.ns.IP(b, "link", "set", "flannel.1", "mtu", "1450", "up")
		h.ns.IP(b, "addr", "add", h.peer().Overlay.String()+"/32", "dev", "flannel.1")
	}
	for _, hp := range [][2]prHost{{a, c}, {c, a}} {
		h, o := hp[0], hp[1]
		h.ns.IP(b, "route", "add", o.peer().Subnet.String(), "via", o.peer().Overlay.String(), "dev", "flannel.1", "onlink")
		h.ns.IP(b, "neigh", "add", o.peer().Overlay.String(), "lladdr", o.mac(), "dev", "flannel.1", "nud", "permanent")
		h.ns.Cmd(b, "bridge", "fdb", "add", o.mac(), "dev", "flannel.1", "dst", o.public().String(), "self", "permanent")
		r, err := probe.NewResponder(probe.ResponderConfig{Netns: h.ns.Netns, Addrs: []netip.Addr{h.peer().Overlay, h.public()}})
		if err != nil {
			b.Fatal(err)
		}
		prServe(b, r.Serve)
	}
	return a, c
}

func prServe(b *testing.B, fn func(context.Context) error) {
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { _ = fn(ctx) })
	b.Cleanup(func() { cancel(); wg.Wait() })
}

func percentile(ds []time.Duration, p float64) time.Duration {
	slices.Sort(ds)
	return ds[int(p*float64(len(ds)-1))]
}

// BenchmarkProbeRTT: round trip time of the small (52-byte) and the
// full-MTU (1450-byte, DF) probe through a VXLAN device between two
// namespaces; each iteration is one round (both probes).
func BenchmarkProbeRTT(b *testing.B) {
	nstest.RequireRoot(b)
	a, c := prPair(b)
	var (
		mu           sync.Mutex
		small, large []time.Duration
		failed       int
	)
	rounds := make(chan struct{}, 1)
	p, err := probe.New(probe.Config{
		Netns: a.ns.Netns, LocalOverlay: a.peer().Overlay, LocalPublic: a.public(), MTU: 1450,
		Interval: time.Millisecond, Rate: 1000, Timeout: 500 * time.Millisecond,
		OnResult: func(r probe.Result) {
			mu.Lock()
			if r.Reachable {
				small, large = append(small, r.RTT), append(large, r.LargeRTT)
			} else {
				failed++
			}
			mu.Unlock()
			select {
			case rounds <- struct{}{}:
			default:
			}
		},
	})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(p.Close)
	p.SetPeers([]probe.Peer{c.peer()})
	prServe(b, p.Run)
	b.ResetTimer()
	for {
		<-rounds
		mu.Lock()
		n := len(small) + failed
		mu.Unlock()
		if n >= b.N {
			break
		}
	}
	b.StopTimer()
	mu.Lock()
	defer mu.Unlock()
	if failed > 0 || len(small) == 0 {
		b.Fatalf("%d rounds failed, %d succeeded", failed, len(small))
	}
	b.ReportMetric(float64(percentile(small, 0.5).Microseconds()), "small-p50-µs")
	b.ReportMetric(float64(percentile(small, 0.99).Microseconds()), "small-p99-µs")
	b.ReportMetric(float64(percentile(large, 0.5).Microseconds()), "large-p50-µs")
	b.ReportMetric(float64(percentile(large, 0.99).Microseconds()), "large-p99-µs")
}

// BenchmarkProbeRate: 500 peers whose probes are routed into a namespace
// that counts and drops them, with the default bound (20 datagrams/s) and
// with 50/s: the rate the prober sends at, by its own count and by the
// sink's nft counter, over 2 s per iteration, as datagrams/s.
func BenchmarkProbeRate(b *testing.B) {
	for _, bound := range []float64{probe.DefaultRate, 50} {
		b.Run(fmt.Sprintf("bound=%g", bound), func(b *testing.B) { benchProbeRate(b, bound) })
	}
}

func benchProbeRate(b *testing.B, bound float64) {
	nstest.RequireRoot(b)
	h, sink := nstest.NewNS(b, "pr"), nstest.NewNS(b, "sink")
	nstest.Veth(b, h, "eth0", sink, "eth0")
	h.IP(b, "addr", "add", "192.168.93.1/24", "dev", "eth0")
	h.IP(b, "addr", "add", "10.8.0.0/32", "dev", "lo")
	sink.IP(b, "addr", "add", "192.168.93.2/24", "dev", "eth0")
	h.IP(b, "route", "add", "10.0.0.0/8", "via", "192.168.93.2")
	h.IP(b, "route", "add", "172.16.0.0/12", "via", "192.168.93.2")
	sink.Exec(b, "nft", "add table ip nabench { counter probes { }; chain pre { type filter hook prerouting priority -300; udp dport 8473 counter name probes drop; }; }")
	arrived := func() uint64 {
		m := packetsRE.FindStringSubmatch(sink.Exec(b, "nft", "list", "counter", "ip", "nabench", "probes"))
		if m == nil {
			b.Fatal("nft list counter: no packet count")
		}
		n, _ := strconv.ParseUint(m[1], 10, 64)
		return n
	}
	var peers []probe.Peer
	for i := range 500 {
		sub := netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(1 + i/256), byte(i % 256), 0}), 24)
		peers = append(peers, probe.Peer{Subnet: sub, Overlay: sub.Addr(), PublicIP: netip.AddrFrom4([4]byte{172, 16, byte(i / 256), byte(i%256 + 1)})})
	}
	p, err := probe.New(probe.Config{Netns: h.Netns, LocalOverlay: netip.MustParseAddr("10.8.0.0"), MTU: 1450,
		Interval: time.Second, Rate: bound, Timeout: 200 * time.Millisecond})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(p.Close)
	p.SetPeers(peers)
	prServe(b, p.Run)
	var sent, counted float64
	for b.Loop() {
		s0, a0, t0 := p.Status().Sent, arrived(), time.Now()
		time.Sleep(2 * time.Second) // the measuring window
		s1, a1, elapsed := p.Status().Sent, arrived(), time.Since(t0).Seconds()
		sent += float64(s1-s0) / elapsed
		counted += float64(a1-a0) / elapsed
	}
	b.ReportMetric(sent/float64(b.N), "datagrams/s")
	b.ReportMetric(counted/float64(b.N), "sink-datagrams/s")
	b.ReportMetric(p.Status().Rate, "bound/s")
	b.ReportMetric(p.Status().Interval.Seconds(), "interval-s")
}

var packetsRE = regexp.MustCompile(`packets (\d+)`)
