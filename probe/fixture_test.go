package probe

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"os/exec"
	"sync"
	"testing"
	"time"

	"github.com/netagent/netagent/backend/backendtest"
)

// cluster is n hosts joined by a bridge in a "switch" namespace, each with
// a flannel.1 VXLAN device programmed as the vxlan backend does (SPEC
// section 3) and a responder on its overlay and public addresses. Host i
// (from 1) has public IP 192.168.91.i on eth0 (its port on the switch is
// p<i>), lease 10.6.i.0/24 and overlay address 10.6.i.0/32.
type cluster struct {
	sw    *backendtest.NS
	hosts []*host
}

type host struct {
	i    int
	ns   *backendtest.NS
	resp *Responder
}

func (h *host) public() netip.Addr { return netip.AddrFrom4([4]byte{192, 168, 91, byte(h.i)}) }
func (h *host) subnet() netip.Prefix {
	return netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 6, byte(h.i), 0}), 24)
}
func (h *host) overlay() netip.Addr { return OverlayAddr("vxlan", h.subnet()) }
func (h *host) mac() string         { return fmt.Sprintf("02:00:00:00:06:%02x", h.i) }
func (h *host) peer() Peer {
	return Peer{Subnet: h.subnet(), Overlay: h.overlay(), PublicIP: h.public()}
}

func testLog(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
}

func newCluster(t *testing.T, n int) *cluster {
	t.Helper()
	c := &cluster{sw: backendtest.NewNS(t, "sw")}
	c.sw.IP(t, "link", "add", "br0", "type", "bridge")
	c.sw.IP(t, "link", "set", "br0", "up")
	for i := 1; i <= n; i++ {
		h := &host{i: i, ns: backendtest.NewNS(t, fmt.Sprintf("h%d", i))}
		port := fmt.Sprintf("p%d", i)
		backendtest.Veth(t, h.ns, "eth0", c.sw, port)
		c.sw.IP(t, "link", "set", port, "master", "br0")
		h.ns.IP(t, "addr", "add", h.public().String()+"/24", "dev", "eth0")
		h.ns.IP(t, "link", "add", "flannel.1", "address", h.mac(), "type", "vxlan", "id", "1",
			"local", h.public().String(), "dev", "eth0", "dstport", "8472", "nolearning")
		h.ns.IP(t, "link", "set", "flannel.1", "mtu", "1450", "up")
		h.ns.IP(t, "addr", "add", h.overlay().String()+"/32", "dev", "flannel.1")
		c.hosts = append(c.hosts, h)
	}
	for _, h := range c.hosts {
		for _, o := range c.hosts {
			if o != h {
				h.program(t, o)
			}
		}
		r, err := NewResponder(ResponderConfig{Log: testLog(t), Netns: h.ns.Netns, Addrs: []netip.Addr{h.overlay(), h.public()}})
		if err != nil {
			t.Fatal(err)
		}
		h.resp = r
		serve(t, r.Serve)
	}
	return c
}

// program installs o's route, neighbour and fdb entry on h.
func (h *host) program(t *testing.T, o *host) {
	t.Helper()
	h.ns.IP(t, "route", "replace", o.subnet().String(), "via", o.overlay().String(), "dev", "flannel.1", "onlink")
	h.ns.IP(t, "neigh", "replace", o.overlay().String(), "lladdr", o.mac(), "dev", "flannel.1", "nud", "permanent")
	h.ns.Cmd(t, "bridge", "fdb", "replace", o.mac(), "dev", "flannel.1", "dst", o.public().String(), "self", "permanent")
}

// peers are every host's Peer but h's.
func (c *cluster) peers(h *host) []Peer {
	var ps []Peer
	for _, o := range c.hosts {
		if o != h {
			ps = append(ps, o.peer())
		}
	}
	return ps
}

// serve runs fn until the test ends.
func serve(t testing.TB, fn func(context.Context) error) {
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() {
		if err := fn(ctx); err != nil && ctx.Err() == nil {
			t.Errorf("serve: %v", err)
		}
	})
	t.Cleanup(func() { cancel(); wg.Wait() })
}

// fastConfig is a Config for tests: short interval and timeouts.
func fastConfig(t testing.TB, h *host) Config {
	return Config{
		Log:          testLog(t),
		Netns:        h.ns.Netns,
		LocalOverlay: h.overlay(),
		LocalPublic:  h.public(),
		MTU:          1450,
		Interval:     300 * time.Millisecond,
		Rate:         200,
		Timeout:      150 * time.Millisecond,
		Attempts:     2,
	}
}

// startProber starts a prober on cfg probing peers until the test ends.
func startProber(t *testing.T, cfg Config, peers []Peer) *Prober {
	t.Helper()
	p, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	p.SetPeers(peers)
	serve(t, p.Run)
	return p
}

// healthOf returns peer's health in p's status.
func healthOf(p *Prober, peer netip.Prefix) (PeerHealth, bool) {
	for _, h := range p.Status().Peers {
		if h.Subnet == peer {
			return h, true
		}
	}
	return PeerHealth{}, false
}

// waitHealth waits until peer's health satisfies ok, failing with its last
// value.
func waitHealth(t *testing.T, p *Prober, peer netip.Prefix, timeout time.Duration, what string, ok func(PeerHealth) bool) PeerHealth {
	t.Helper()
	var last PeerHealth
	backendtest.Eventually(t, timeout, func() error {
		h, found := healthOf(p, peer)
		last = h
		if found && ok(h) {
			return nil
		}
		return fmt.Errorf("%s: want %s, have %+v", peer, what, h)
	})
	return last
}

// execIn runs `ip netns exec <ns> args...`, returning its output and error.
func execIn(ns *backendtest.NS, args ...string) (string, error) {
	out, err := exec.Command("ip", append([]string{"netns", "exec", ns.Name}, args...)...).CombinedOutput()
	return string(out), err
}
