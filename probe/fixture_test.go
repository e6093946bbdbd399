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

	"github.com/netagent/netagent/internal/await"
	"github.com/netagent/netagent/internal/nstest"
)

// cluster is n hosts joined by a bridge in a "switch" namespace, each with
// a VXLAN device per address family programmed as the vxlan backend does
// (docs/compatibility.md §5) and one responder on its overlay and public addresses
// of every family. Host i (from 1) has, over IPv4, public IP 192.168.91.i
// on eth0 (its port on the switch is p<i>), lease 10.6.i.0/24 and overlay
// address 10.6.i.0/32 on flannel.1 (MTU 1450); over IPv6, public IP
// fd00:91::i, lease fc00:6:0:i::/64 and overlay address fc00:6:0:i::/128
// on flannel-v6.1 (MTU 1430: the outer IPv6 header is 20 bytes longer).
type cluster struct {
	sw *nstest.NS
	// hosts are the hosts as seen over IPv4, hosts6 the same hosts over
	// IPv6; nil for a family the cluster does not have.
	hosts, hosts6 []*host
}

// host is one host as seen over one address family.
type host struct {
	i    int
	v6   bool
	ns   *nstest.NS
	resp *Responder
}

func (h *host) public() netip.Addr {
	if h.v6 {
		return netip.AddrFrom16([16]byte{0xfd, 0, 0, 0x91, 15: byte(h.i)})
	}
	return netip.AddrFrom4([4]byte{192, 168, 91, byte(h.i)})
}

func (h *host) subnet() netip.Prefix {
	if h.v6 {
		return netip.PrefixFrom(netip.AddrFrom16([16]byte{0xfc, 0, 0, 6, 0, 0, 0, byte(h.i)}), 64)
	}
	return netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 6, byte(h.i), 0}), 24)
}

func (h *host) overlay() netip.Addr { return OverlayAddr("vxlan", h.subnet()) }

func (h *host) mac() string {
	if h.v6 {
		return fmt.Sprintf("02:00:00:00:66:%02x", h.i)
	}
	return fmt.Sprintf("02:00:00:00:06:%02x", h.i)
}

// dev is the family's VXLAN device, mtu its MTU.
func (h *host) dev() string {
	if h.v6 {
		return "flannel-v6.1"
	}
	return "flannel.1"
}

func (h *host) mtu() int {
	if h.v6 {
		return 1430
	}
	return 1450
}

func (h *host) peer() Peer {
	return Peer{Subnet: h.subnet(), Overlay: h.overlay(), PublicIP: h.public()}
}

func testLog(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
}

// newCluster is an IPv4 cluster of n hosts.
func newCluster(t *testing.T, n int) *cluster { return newClusterOf(t, n, true, false) }

// newClusterOf is a cluster of n hosts with an IPv4 overlay if v4 is set,
// an IPv6 one if v6 is.
func newClusterOf(t *testing.T, n int, v4, v6 bool) *cluster {
	t.Helper()
	c := &cluster{sw: nstest.NewNS(t, "sw")}
	c.sw.IP(t, "link", "add", "br0", "type", "bridge")
	c.sw.IP(t, "link", "set", "br0", "up")
	for i := 1; i <= n; i++ {
		ns := nstest.NewNS(t, fmt.Sprintf("h%d", i))
		port := fmt.Sprintf("p%d", i)
		nstest.Veth(t, ns, "eth0", c.sw, port)
		c.sw.IP(t, "link", "set", port, "master", "br0")
		var views []*host
		if v4 {
			h := &host{i: i, ns: ns}
			ns.IP(t, "addr", "add", h.public().String()+"/24", "dev", "eth0")
			c.hosts, views = append(c.hosts, h), append(views, h)
		}
		if v6 {
			h := &host{i: i, v6: true, ns: ns}
			ns.IP(t, "addr", "add", h.public().String()+"/64", "dev", "eth0", "nodad")
			c.hosts6, views = append(c.hosts6, h), append(views, h)
		}
		var addrs []netip.Addr
		for _, h := range views {
			ns.IP(t, "link", "add", h.dev(), "address", h.mac(), "type", "vxlan", "id", "1",
				"local", h.public().String(), "dev", "eth0", "dstport", "8472", "nolearning")
			ns.IP(t, "link", "set", h.dev(), "mtu", fmt.Sprint(h.mtu()), "up")
			ns.IP(t, "addr", "add", netip.PrefixFrom(h.overlay(), h.overlay().BitLen()).String(), "dev", h.dev(), "nodad")
			addrs = append(addrs, h.overlay(), h.public())
		}
		// One responder answers on the addresses of both families.
		r, err := NewResponder(ResponderConfig{Log: testLog(t), Netns: ns.Netns, Addrs: addrs})
		if err != nil {
			t.Fatal(err)
		}
		serve(t, r.Serve)
		for _, h := range views {
			h.resp = r
		}
	}
	for _, hs := range [][]*host{c.hosts, c.hosts6} {
		for _, h := range hs {
			for _, o := range hs {
				if o != h {
					h.program(t, o)
				}
			}
		}
	}
	return c
}

// program installs o's route, neighbour and fdb entry on h.
func (h *host) program(t *testing.T, o *host) {
	t.Helper()
	h.ns.IP(t, "route", "replace", o.subnet().String(), "via", o.overlay().String(), "dev", h.dev(), "onlink")
	h.ns.IP(t, "neigh", "replace", o.overlay().String(), "lladdr", o.mac(), "dev", h.dev(), "nud", "permanent")
	h.ns.Cmd(t, "bridge", "fdb", "replace", o.mac(), "dev", h.dev(), "dst", o.public().String(), "self", "permanent")
}

// peers are every host's Peer but h's, of h's family.
func (c *cluster) peers(h *host) []Peer {
	hs := c.hosts
	if h.v6 {
		hs = c.hosts6
	}
	var ps []Peer
	for _, o := range hs {
		if o.i != h.i {
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
		MTU:          h.mtu(),
		Interval:     300 * time.Millisecond,
		Rate:         200,
		Timeout:      300 * time.Millisecond,
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
// statuser is a Prober, or several seen as one (statusFunc).
type statuser interface{ Status() Status }

// statusFunc makes a function a statuser.
type statusFunc func() Status

func (f statusFunc) Status() Status { return f() }

func healthOf(p statuser, peer netip.Prefix) (PeerHealth, bool) {
	for _, h := range p.Status().Peers {
		if h.Subnet == peer {
			return h, true
		}
	}
	return PeerHealth{}, false
}

// waitHealth waits until peer's health satisfies ok, failing with its last
// value.
func waitHealth(t *testing.T, p statuser, peer netip.Prefix, timeout time.Duration, what string, ok func(PeerHealth) bool) PeerHealth {
	t.Helper()
	var last PeerHealth
	await.Eventually(t, timeout, "peer health", func() error {
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
func execIn(ns *nstest.NS, args ...string) (string, error) {
	out, err := exec.Command("ip", append([]string{"netns", "exec", ns.Name}, args...)...).CombinedOutput()
	return string(out), err
}
