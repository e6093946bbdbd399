package probe

import (
	"errors"
	"net/netip"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/netagent/netagent/internal/nstest"
)

// nftCount returns the packets counted by counter name of table inet
// natest in ns.
func nftCount(t *testing.T, ns *nstest.NS, name string) uint64 {
	t.Helper()
	out, err := execIn(ns, "nft", "list", "counter", "inet", "natest", name)
	m := packetsRE.FindStringSubmatch(out)
	if err != nil || m == nil {
		t.Fatalf("nft list counter %s: %v: %s", name, err, out)
	}
	n, _ := strconv.ParseUint(m[1], 10, 64)
	return n
}

// TestIPv6FullMTUProbe: over an IPv6 vxlan pair (flannel-v6.1, MTU 1430)
// the large probe is a 1430-byte IPv6 packet, which arrives whole (not in
// fragments) through the overlay, and is echoed whole; one byte more is
// refused by the sender with EMSGSIZE instead of being fragmented.
func TestIPv6FullMTUProbe(t *testing.T) {
	c := newClusterOf(t, 2, false, true)
	a, b := c.hosts6[0], c.hosts6[1]
	const counters = `add table inet natest {
		counter full { }; counter other { }; counter frags { };
		chain in { type filter hook input priority 0;
			iifname "flannel-v6.1" meta nfproto ipv6 exthdr frag exists counter name frags;
			iifname "flannel-v6.1" udp dport 8473 meta length 1430 counter name full;
			iifname "flannel-v6.1" udp dport 8473 meta length != 1430 counter name other;
			iifname "flannel-v6.1" udp sport 8473 meta length 1430 counter name full;
		}; }`
	for _, h := range []*host{a, b} {
		if out, err := execIn(h.ns, "nft", counters); err != nil {
			t.Fatalf("nft: %v: %s", err, out)
		}
	}
	p := startProber(t, fastConfig(t, a), c.peers(a))
	ph := waitHealth(t, p, b.subnet(), within, "reachable", reachable)
	t.Logf("%s over flannel-v6.1: RTT %v, full-MTU RTT %v", b.subnet(), ph.RTT, ph.LargeRTT)
	if ph.RTT <= 0 || ph.LargeRTT <= 0 || ph.Overlay != b.overlay() {
		t.Errorf("health %+v; want both RTTs measured through %s", ph, b.overlay())
	}
	// b got requests of 1430 bytes (and small ones), a their echoes; no
	// fragment anywhere.
	if n := nftCount(t, b.ns, "full"); n == 0 {
		t.Errorf("host 2 saw no 1430-byte probe on flannel-v6.1")
	}
	if n := nftCount(t, b.ns, "other"); n == 0 {
		t.Errorf("host 2 saw no small probe on flannel-v6.1")
	}
	if n := nftCount(t, a.ns, "full"); n == 0 {
		t.Errorf("host 1 saw no 1430-byte reply on flannel-v6.1")
	}
	for _, h := range []*host{a, b} {
		if n := nftCount(t, h.ns, "frags"); n != 0 {
			t.Errorf("host %d saw %d IPv6 fragments", h.i, n)
		}
	}

	// The prober's sockets: MTU-48 bytes of payload go, one more does
	// not, and nothing is fragmented.
	conn, err := listenUDPIn(a.ns.Netns, a.overlay(), true, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	to := netip.AddrPortFrom(b.overlay(), DefaultPort)
	for _, tc := range []struct {
		size int
		want error
	}{{a.mtu() - ipv6UDPHeaders, nil}, {a.mtu() - ipv6UDPHeaders + 1, syscall.EMSGSIZE}} {
		req := header{kind: kindRequest, size: tc.size, seq: 1}.encode(make([]byte, tc.size))
		if _, err := conn.WriteToUDPAddrPort(req, to); !errors.Is(err, tc.want) && (err != nil || tc.want != nil) {
			t.Errorf("%d bytes of payload to %s: %v, want %v", tc.size, to, err, tc.want)
		}
	}
	if err := conn.SetReadDeadline(time.Now().Add(within)); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 2000)
	n, from, err := conn.ReadFromUDPAddrPort(buf)
	if err != nil || n != a.mtu()-ipv6UDPHeaders || from != to {
		t.Errorf("answer of %d bytes from %s (%v); want %d from %s", n, from, err, a.mtu()-ipv6UDPHeaders, to)
	}
}

// TestDualStackProbers: on dual-stack hosts (one responder each, on the
// addresses of both families), an IPv4 and an IPv6 prober on host 1,
// the second included in the first, show every peer of both families
// reachable in one Status; the IPv6 prober leaves out an IPv4 peer it is
// given.
func TestDualStackProbers(t *testing.T) {
	c := newClusterOf(t, 3, true, true)
	a4, a6 := c.hosts[0], c.hosts6[0]
	p4 := startProber(t, fastConfig(t, a4), c.peers(a4))
	cfg6 := fastConfig(t, a6)
	cfg6.Rate = cfg6.Rate / 2
	p6 := startProber(t, cfg6, append(c.peers(a6), c.hosts[1].peer()))
	merged := statusFunc(func() Status { return MergeStatus(p4.Status(), p6.Status()) })

	var all []Peer
	for _, h := range append(c.hosts[1:], c.hosts6[1:]...) {
		all = append(all, h.peer())
	}
	for _, peer := range all {
		ph := waitHealth(t, merged, peer.Subnet, within, "reachable", reachable)
		t.Logf("%s at %s: RTT %v, full-MTU RTT %v", peer.Subnet, ph.Overlay, ph.RTT, ph.LargeRTT)
		if ph.Peer != peer || ph.LargeRTT <= 0 {
			t.Errorf("%+v; want %+v probed with the full-MTU probe", ph, peer)
		}
	}
	st, st6 := merged.Status(), p6.Status()
	if len(st.Peers) != 4 || len(st6.Peers) != 2 || st.Rate != fastConfig(t, a4).Rate+cfg6.Rate || st6.Sent == 0 || st.Sent <= st6.Sent {
		t.Errorf("merged status %d peers, rate %v, sent %d; IPv6 prober %d peers, sent %d; want 4 and 2 peers, rates and counters added",
			len(st.Peers), st.Rate, st.Sent, len(st6.Peers), st6.Sent)
	}
	for i, ph := range st.Peers {
		if want := all[i].Subnet; ph.Subnet != want {
			t.Errorf("peer %d is %s, want %s (sorted, IPv4 first)", i, ph.Subnet, want)
		}
	}
	if _, ok := healthOf(p6, c.hosts[1].subnet()); ok {
		t.Errorf("the IPv6 prober took the IPv4 peer %s", c.hosts[1].subnet())
	}
}
