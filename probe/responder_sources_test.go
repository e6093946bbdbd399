package probe

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/netagent/netagent/internal/await"
	"github.com/netagent/netagent/internal/nstest"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

func TestSources(t *testing.T) {
	s := NewSources(
		[]netip.Addr{netip.MustParseAddr("192.168.91.1"), netip.MustParseAddr("fd00:91::2"), {}},
		[]netip.Prefix{netip.MustParsePrefix("10.6.1.0/24"), netip.MustParsePrefix("10.6.2.7/24"), netip.MustParsePrefix("fc00:6:0:1::/64"), {}},
	)
	cases := []struct {
		addr string
		want bool
	}{
		{"192.168.91.1", true},
		{"::ffff:192.168.91.1", true},
		{"192.168.91.2", false},
		{"fd00:91::2", true},
		{"fd00:91::3", false},
		{"10.6.1.0", true},
		{"10.6.1.255", true},
		{"10.6.2.33", true},
		{"10.6.3.1", false},
		{"10.6.0.255", false},
		{"fc00:6:0:1::", true},
		{"fc00:6:0:1:ffff::9", true},
		{"fc00:6:0:2::", false},
		{"203.0.113.9", false},
	}
	for _, c := range cases {
		if got := s.Allows(netip.MustParseAddr(c.addr)); got != c.want {
			t.Errorf("Allows(%s) = %v, want %v", c.addr, got, c.want)
		}
	}
	if s.Len() != 5 {
		t.Errorf("Len = %d, want 5", s.Len())
	}
	var none *Sources
	if !none.Allows(netip.MustParseAddr("203.0.113.9")) {
		t.Error("a nil Sources must allow every address")
	}
	same := NewSources([]netip.Addr{netip.MustParseAddr("fd00:91::2"), netip.MustParseAddr("192.168.91.1")},
		[]netip.Prefix{netip.MustParsePrefix("fc00:6:0:1::/64"), netip.MustParsePrefix("10.6.2.0/24"), netip.MustParsePrefix("10.6.1.0/24")})
	if !s.Equal(same) || s.Equal(NewSources(nil, nil)) || s.Equal(nil) || !none.Equal(nil) {
		t.Error("Equal does not compare the sets")
	}
}

func BenchmarkSourcesAllows(b *testing.B) {
	var addrs []netip.Addr
	var subnets []netip.Prefix
	for i := range 5000 {
		addrs = append(addrs, netip.AddrFrom4([4]byte{192, 168, byte(i >> 8), byte(i)}))
		subnets = append(subnets, netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(i >> 8), byte(i), 0}), 24))
	}
	s := NewSources(addrs, subnets)
	from := []netip.Addr{netip.MustParseAddr("10.19.136.0"), netip.MustParseAddr("192.168.19.136"), netip.MustParseAddr("203.0.113.9")}
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		s.Allows(from[i%len(from)])
	}
}

// sendProbe sends one probe request from src (bound in ns) to dst and
// returns the socket, for reading the answer.
func sendProbe(t *testing.T, ns netns.NsHandle, src, dst netip.Addr, seq uint64) *net.UDPConn {
	t.Helper()
	c, err := listenUDPIn(ns, src, src.Is6(), 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	b := header{kind: kindRequest, size: headerLen, seq: seq}.encode(make([]byte, headerLen))
	if _, err := c.WriteToUDPAddrPort(b, netip.AddrPortFrom(dst, DefaultPort)); err != nil {
		t.Fatal(err)
	}
	return c
}

// TestResponderAnswersClusterOnly: a responder given the cluster's hosts
// answers a probe from a peer's public IP, counts one from an address of
// no lease as refused without answering it, and answers that address once
// it is in the set.
func TestResponderAnswersClusterOnly(t *testing.T) {
	nstest.RequireRoot(t)
	c := newCluster(t, 2)
	h1, h2 := c.hosts[0], c.hosts[1]
	h2.resp.SetSources(NewSources([]netip.Addr{h1.public(), h2.public()}, []netip.Prefix{h1.subnet(), h2.subnet()}))
	stranger := netip.MustParseAddr("192.168.91.99")
	h1.ns.IP(t, "addr", "add", stranger.String()+"/24", "dev", "eth0")

	// A peer's public IP is answered.
	ok := sendProbe(t, h1.ns.Netns, h1.public(), h2.public(), 1)
	buf := make([]byte, 128)
	ok.SetReadDeadline(time.Now().Add(time.Minute)) // bounds a hang only
	if n, _, err := ok.ReadFromUDPAddrPort(buf); err != nil {
		t.Fatalf("probe from a peer's public IP: %v", err)
	} else if h, err := parse(buf[:n]); err != nil || h.kind != kindReply || h.seq != 1 {
		t.Fatalf("reply %+v, %v", h, err)
	}

	// A source of no lease is refused, and nothing is sent back.
	replies := h2.resp.Replies()
	forged := sendProbe(t, h1.ns.Netns, stranger, h2.public(), 2)
	await.Eventually(t, time.Minute, "the forged probe refused", func() error {
		if n := h2.resp.Refused(); n != 1 {
			return fmt.Errorf("refused %d, want 1", n)
		}
		return nil
	})
	if n := h2.resp.Replies(); n != replies {
		t.Fatalf("the responder answered a source of no lease: replies %d → %d", replies, n)
	}

	// Once the address is a lease's, it is answered (on the same socket:
	// the refused probe left nothing queued on it).
	h2.resp.SetSources(NewSources([]netip.Addr{h1.public(), stranger}, []netip.Prefix{h1.subnet()}))
	b := header{kind: kindRequest, size: headerLen, seq: 3}.encode(make([]byte, headerLen))
	if _, err := forged.WriteToUDPAddrPort(b, netip.AddrPortFrom(h2.public(), DefaultPort)); err != nil {
		t.Fatal(err)
	}
	forged.SetReadDeadline(time.Now().Add(time.Minute))
	n, _, err := forged.ReadFromUDPAddrPort(buf)
	if err != nil {
		t.Fatalf("probe from an allowed source: %v", err)
	}
	if h, err := parse(buf[:n]); err != nil || h.seq != 3 {
		t.Fatalf("first answer to the forged socket is %+v (%v), want the reply to seq 3 only", h, err)
	}
}

// TestProberNoResponder: a peer whose responder is gone answers the
// probes with ICMP port unreachable; the prober reports no-responder, not
// a lost path, and the peer is reachable again once a responder serves.
func TestProberNoResponder(t *testing.T) {
	nstest.RequireRoot(t)
	c := newCluster(t, 2)
	h1, h2 := c.hosts[0], c.hosts[1]
	p := startProber(t, fastConfig(t, h1), c.peers(h1))
	waitHealth(t, p, h2.subnet(), time.Minute, "reachable", func(h PeerHealth) bool { return h.Reachable })
	h2.resp.Close()
	got := waitHealth(t, p, h2.subnet(), time.Minute, string(CauseNoResponder), func(h PeerHealth) bool { return h.Cause == CauseNoResponder })
	if !strings.Contains(got.Detail, "port unreachable") || p.Status().Refused == 0 {
		t.Errorf("health %+v, refused %d: want the port unreachable in the detail and counted", got, p.Status().Refused)
	}
	r, err := NewResponder(ResponderConfig{Log: testLog(t), Netns: h2.ns.Netns, Addrs: []netip.Addr{h2.overlay(), h2.public()}})
	if err != nil {
		t.Fatal(err)
	}
	serve(t, r.Serve)
	waitHealth(t, p, h2.subnet(), time.Minute, "reachable again", func(h PeerHealth) bool { return h.Reachable })
}

// occupy binds a UDP socket to addr:port in ns, so that a responder
// cannot bind the port there, and connects it elsewhere, so that it takes
// no probe either: the port is unreachable. close frees it.
func occupy(t *testing.T, ns netns.NsHandle, addr netip.Addr, port int) (close func()) {
	t.Helper()
	var fd int
	err := inNetns(ns, func() error {
		var err error
		if fd, err = unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0); err != nil {
			return err
		}
		if err := unix.Bind(fd, &unix.SockaddrInet4{Port: port, Addr: addr.As4()}); err != nil {
			unix.Close(fd)
			return err
		}
		return unix.Connect(fd, &unix.SockaddrInet4{Port: 9, Addr: [4]byte{127, 0, 0, 1}})
	})
	if err != nil {
		t.Fatal(err)
	}
	var once sync.Once
	close = func() { once.Do(func() { unix.Close(fd) }) }
	t.Cleanup(close)
	return close
}

// TestResponderKeeperRetries: a responder that cannot bind its port is
// reported not serving with the error, retried, and serves once the port
// is free.
func TestResponderKeeperRetries(t *testing.T) {
	nstest.RequireRoot(t)
	ns := nstest.NewNS(t, "keep")
	ns.IP(t, "link", "set", "lo", "up")
	free := occupy(t, ns.Netns, netip.MustParseAddr("127.0.0.1"), DefaultPort)
	k := NewResponderKeeper(ResponderConfig{Log: testLog(t), Netns: ns.Netns, Addrs: []netip.Addr{netip.MustParseAddr("127.0.0.1")}},
		10*time.Millisecond, 50*time.Millisecond)
	serve(t, func(ctx context.Context) error { k.Run(ctx); return nil })
	await.Eventually(t, time.Minute, "the keeper retrying on a busy port", func() error {
		if st := k.State(); st.Serving || st.Failures < 2 || !strings.Contains(st.Err, "address already in use") {
			return fmt.Errorf("state %+v, want not serving, retried, address in use", st)
		}
		return nil
	})
	free()
	await.Eventually(t, time.Minute, "the keeper serving once the port is free", func() error {
		if st := k.State(); !st.Serving || st.Err != "" {
			return fmt.Errorf("state %+v, want serving", st)
		}
		return nil
	})
}

// TestResponderRestartRebinds is the restart of the probes after a
// subnet change: the responder on the old overlay address and the public
// IP is stopped and one on the new overlay address and the same public
// IP starts at once. Once the old keeper's Run has returned its sockets
// are closed, so the new one binds at the first attempt, every time.
func TestResponderRestartRebinds(t *testing.T) {
	nstest.RequireRoot(t)
	ns := nstest.NewNS(t, "rebind")
	ns.IP(t, "link", "set", "lo", "up")
	public := netip.MustParseAddr("127.0.0.1")
	for i := range 20 {
		k := NewResponderKeeper(ResponderConfig{Log: testLog(t), Netns: ns.Netns,
			Addrs: []netip.Addr{netip.AddrFrom4([4]byte{10, 6, byte(i), 0}), public}}, time.Hour, time.Hour)
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { k.Run(ctx); close(done) }()
		await.Eventually(t, time.Minute, "the keeper serving at its first attempt", func() error {
			if st := k.State(); !st.Serving || st.Failures != 0 {
				return fmt.Errorf("attempt %d: state %+v, want serving at the first attempt", i, st)
			}
			return nil
		})
		cancel()
		<-done
	}
	// And a socket left open does hold the port: the failure the
	// waiting prevents.
	r, err := NewResponder(ResponderConfig{Netns: ns.Netns, Addrs: []netip.Addr{public}})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if _, err := NewResponder(ResponderConfig{Netns: ns.Netns, Addrs: []netip.Addr{netip.MustParseAddr("10.6.99.0"), public}}); !errors.Is(err, syscall.EADDRINUSE) {
		t.Fatalf("second responder on a held port: %v, want EADDRINUSE", err)
	}
}
