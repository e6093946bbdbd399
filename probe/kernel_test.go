package probe

import (
	"fmt"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/netagent/netagent/internal/await"
)

// within bounds how long a test waits for a change to show. It only
// bounds a hang: a change shows within one probe interval and a round
// (fastConfig) on an idle machine, and a loaded one may lose a round to a
// probe timeout, so the tests wait for conditions, never for a window.
const within = time.Minute

func reachable(h PeerHealth) bool { return h.Probed && h.Reachable }

func TestAllPeersReachable(t *testing.T) {
	c := newCluster(t, 3)
	var probers []*Prober
	for _, h := range c.hosts {
		probers = append(probers, startProber(t, fastConfig(t, h), c.peers(h)))
	}
	for i, p := range probers {
		for _, peer := range c.peers(c.hosts[i]) {
			ph := waitHealth(t, p, peer.Subnet, within, "reachable", reachable)
			if ph.RTT <= 0 || ph.SmoothedRTT <= 0 || ph.LargeRTT <= 0 || ph.LastSuccess.IsZero() || ph.Cause != CauseNone {
				t.Errorf("host %d → %s: %+v; want RTTs > 0, a last success, no cause", i+1, peer.Subnet, ph)
			}
		}
		// A round lost to a loaded machine fails a peer until its next
		// round: wait for every peer to be reachable at once.
		await.Eventually(t, within, "every peer reachable", func() error {
			if st := p.Status(); st.Sent == 0 || st.Answered == 0 || len(st.Unreachable()) != 0 {
				return fmt.Errorf("host %d: sent %d answered %d unreachable %v", i+1, st.Sent, st.Answered, st.Unreachable())
			}
			return nil
		})
	}
	for _, h := range c.hosts {
		if h.resp.Replies() == 0 {
			t.Errorf("host %d's responder answered nothing", h.i)
		}
	}
}

// TestCauses breaks the path from host 1 to host 3 in each way in turn,
// checks the cause host 1 reports within one interval and round, repairs
// it and checks host 3 is reachable again. Host 2 stays reachable
// throughout. Over an IPv4 overlay and underlay, then over IPv6.
func TestCauses(t *testing.T) {
	t.Run("IPv4", func(t *testing.T) { testCauses(t, false) })
	t.Run("IPv6", func(t *testing.T) { testCauses(t, true) })
}

func testCauses(t *testing.T, v6 bool) {
	c := newClusterOf(t, 3, !v6, v6)
	hosts := c.hosts
	if v6 {
		hosts = c.hosts6
	}
	a, b, victim := hosts[0], hosts[1], hosts[2]
	var unprogrammed atomic.Bool
	cfg := fastConfig(t, a)
	cfg.Programmed = func(p Peer) bool { return p.Subnet != victim.subnet() || !unprogrammed.Load() }
	p := startProber(t, cfg, c.peers(a))
	waitHealth(t, p, victim.subnet(), within, "reachable", reachable)

	nft := func(args ...string) func(t *testing.T) {
		return func(t *testing.T) { victim.ns.Exec(t, append([]string{"nft"}, args...)...) }
	}
	mtu := func(n string) func(t *testing.T) {
		return func(t *testing.T) {
			c.sw.IP(t, "link", "set", "p3", "mtu", n)
			victim.ns.IP(t, "link", "set", "eth0", "mtu", n)
		}
	}
	cases := []struct {
		name         string
		brk, fix     func(t *testing.T)
		want         Cause
		detail       string
		wantSmallRTT bool
	}{
		{
			name:   "firewall drops the VXLAN port",
			brk:    nft("add table inet natest { chain in { type filter hook input priority 0; udp dport 8472 drop; }; }"),
			fix:    nft("delete table inet natest"),
			want:   CauseNoAnswer,
			detail: "underlay answers",
		},
		{
			name: "underlay MTU lowered on one link",
			brk:  mtu("1400"),
			fix: func(t *testing.T) {
				mtu("1500")(t)
				// While its link was narrow the victim learnt a smaller
				// path MTU towards host 1's overlay address (the vxlan
				// driver's PMTU check), which the kernel keeps for 10
				// minutes: re-create the route to drop it.
				victim.ns.IP(t, "route", "del", a.subnet().String())
				victim.program(t, a)
			},
			want:         CauseLargePacketsLost,
			detail:       fmt.Sprintf("%d-byte probe", a.mtu()),
			wantSmallRTT: true,
		},
		{
			name: "backend says not programmed",
			brk:  func(*testing.T) { unprogrammed.Store(true) },
			fix:  func(*testing.T) { unprogrammed.Store(false) },
			want: CauseNotProgrammed,
		},
		{
			name: "route missing",
			brk:  func(t *testing.T) { a.ns.IP(t, "route", "del", victim.subnet().String()) },
			fix:  func(t *testing.T) { a.program(t, victim) },
			want: CauseNotProgrammed,
		},
		{
			name:   "underlay link down",
			brk:    func(t *testing.T) { c.sw.IP(t, "link", "set", "p3", "down") },
			fix:    func(t *testing.T) { c.sw.IP(t, "link", "set", "p3", "up") },
			want:   CauseUnderlayUnreachable,
			detail: "underlay: probe: no answer",
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before, _ := healthOf(p, victim.subnet())
			tc.brk(t)
			broke := time.Now()
			ph := waitHealth(t, p, victim.subnet(), within, string(tc.want), func(h PeerHealth) bool {
				return h.Probed && !h.Reachable && h.Cause == tc.want
			})
			t.Logf("%s: cause %s after %v: %s", victim.subnet(), ph.Cause, time.Since(broke).Round(time.Millisecond), ph.Detail)
			if !strings.Contains(ph.Detail, tc.detail) {
				t.Errorf("detail %q does not say %q", ph.Detail, tc.detail)
			}
			if ph.LastSuccess.Before(before.LastSuccess) || ph.ConsecutiveFailures == 0 {
				t.Errorf("last success %v (was %v), %d failures", ph.LastSuccess, before.LastSuccess, ph.ConsecutiveFailures)
			}
			if tc.wantSmallRTT && ph.RTT <= 0 {
				t.Errorf("small probe RTT %v, want > 0", ph.RTT)
			}
			// Host 2 is not hit by the break: it is (again, if a round
			// was lost to a loaded machine) reachable while the victim
			// is still broken.
			await.Eventually(t, within, "only the victim unreachable", func() error {
				st := p.Status()
				if un := st.Unreachable(); len(un) != 1 || un[0].Subnet != victim.subnet() {
					return fmt.Errorf("unreachable %+v, want only %s", un, victim.subnet())
				}
				if hb, _ := healthOf(p, b.subnet()); !hb.Reachable {
					return fmt.Errorf("host 2 is not reachable: %+v", hb)
				}
				return nil
			})
			tc.fix(t)
			waitHealth(t, p, victim.subnet(), within, "reachable again", reachable)
		})
	}
}

// TestOffloadTrialRestores: host 3 drops VXLAN traffic but answers on its
// public IP, so host 1 turns TX checksum offload of its flannel.1 off,
// finds that the path does not come back, turns it on again and reports
// host 3 as no-answer with offload ruled out.
func TestOffloadTrialRestores(t *testing.T) {
	c := newCluster(t, 3)
	a, victim := c.hosts[0], c.hosts[2]
	sw, err := OpenEthtool(a.ns.Netns, "flannel.1")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sw.Close() })
	if on, err := sw.TxChecksum(); err != nil || !on {
		t.Fatalf("flannel.1 TX checksum offload %t, %v; want on to start with", on, err)
	}
	var (
		mu     sync.Mutex
		events []OffloadEvent
		kernel []bool // the setting read back from the kernel at each event
	)
	cfg := fastConfig(t, a)
	// A healthy peer that lost its overlay probes to a loaded machine
	// would be taken into the trial (and recover in it). The events are
	// the assertion here, so the timeout is 1 s, far above the delays a
	// loaded machine adds to an answer (milliseconds; 300 ms elsewhere).
	cfg.Timeout = time.Second
	cfg.Offload, cfg.AutoOffload = sw, true
	cfg.OnOffload = func(ev OffloadEvent) {
		on, err := sw.TxChecksum()
		if err != nil {
			t.Errorf("read offload: %v", err)
		}
		mu.Lock()
		events, kernel = append(events, ev), append(kernel, on)
		mu.Unlock()
	}
	p := startProber(t, cfg, c.peers(a))
	waitHealth(t, p, victim.subnet(), within, "reachable", reachable)

	victim.ns.Exec(t, "nft", "add table ip natest { chain in { type filter hook input priority 0; udp dport 8472 drop; }; }")
	ph := waitHealth(t, p, victim.subnet(), within, "no-answer with offload ruled out", func(h PeerHealth) bool {
		return h.Cause == CauseNoAnswer && h.OffloadRuledOut
	})
	// OnOffload runs after the round's health is recorded: wait for it.
	var (
		got       []OffloadEvent
		gotKernel []bool
	)
	await.Eventually(t, within, "the offload change and its restore", func() error {
		mu.Lock()
		defer mu.Unlock()
		got, gotKernel = append([]OffloadEvent(nil), events...), append([]bool(nil), kernel...)
		if len(got) < 2 {
			return fmt.Errorf("offload events %+v, want two", got)
		}
		return nil
	})
	if len(got) != 2 || got[0].Kind != OffloadTrialOff || got[1].Kind != OffloadRestored ||
		got[0].TxChecksum || !got[1].TxChecksum || gotKernel[0] || !gotKernel[1] {
		t.Fatalf("events %+v (kernel said %v); want trial-off (off) then restored (on)", got, gotKernel)
	}
	for _, ev := range got {
		if len(ev.Peers) != 1 || ev.Peers[0] != victim.subnet() || ev.Err != nil || ev.Device != "flannel.1" {
			t.Errorf("event %+v; want about %s only, no error", ev, victim.subnet())
		}
	}
	if on, err := sw.TxChecksum(); err != nil || !on {
		t.Errorf("after the trial flannel.1 TX checksum offload is %t, %v; want restored on", on, err)
	}
	st := p.Status().Offload
	if st == nil || !st.TxChecksum || st.Trial || st.KeptOff || !st.Auto {
		t.Errorf("offload status %+v; want on, no trial, not kept off", st)
	}
	t.Logf("%s: %s (%s)", victim.subnet(), ph.Cause, ph.Detail)

	// Still failing: no second trial for the same peer.
	waitHealth(t, p, victim.subnet(), within, "another failed round", func(h PeerHealth) bool {
		return h.ConsecutiveFailures >= ph.ConsecutiveFailures+2
	})
	mu.Lock()
	n := len(events)
	mu.Unlock()
	if n != 2 {
		t.Errorf("%d offload events, want no new trial for a ruled-out peer", n)
	}
}

func TestEthtoolTxChecksumRoundTrip(t *testing.T) {
	c := newCluster(t, 1)
	h := c.hosts[0]
	for _, dev := range []string{"eth0", "flannel.1"} {
		t.Run(dev, func(t *testing.T) {
			e, err := OpenEthtool(h.ns.Netns, dev)
			if err != nil {
				t.Fatal(err)
			}
			defer e.Close()
			for _, want := range []bool{false, true, false, true} {
				if err := e.SetTxChecksum(want); err != nil {
					t.Fatal(err)
				}
				got, err := e.TxChecksum()
				if err != nil {
					t.Fatal(err)
				}
				word := map[bool]string{true: "on", false: "off"}[want]
				out := h.ns.Exec(t, "ethtool", "-k", dev)
				if got != want || !strings.Contains(out, "tx-checksumming: "+word) {
					t.Fatalf("set %t: ioctl reads %t, ethtool -k says\n%s", want, got, out)
				}
			}
		})
	}
	e, err := OpenEthtool(h.ns.Netns, "nosuchdev")
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	if _, err := e.TxChecksum(); err == nil {
		t.Error("TxChecksum of a missing device did not fail")
	}
}

// TestResponderIgnoresNonProbes: datagrams that are not probe requests get
// no answer; requests do.
func TestResponderIgnoresNonProbes(t *testing.T) {
	c := newCluster(t, 2)
	a, b := c.hosts[0], c.hosts[1]
	conn, err := listenUDPIn(a.ns.Netns, a.public(), false, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	to := netip.AddrPortFrom(b.public(), DefaultPort)
	req := header{kind: kindRequest, size: 100, seq: 7}.encode(make([]byte, 100))
	reply := header{kind: kindReply, size: 100, seq: 8}.encode(make([]byte, 100))
	for _, d := range [][]byte{[]byte("hello"), reply, req[:50], req} {
		if _, err := conn.WriteToUDPAddrPort(d, to); err != nil {
			t.Fatal(err)
		}
	}
	conn.SetReadDeadline(time.Now().Add(within)) // bounds a hang
	buf := make([]byte, 2000)
	n, from, err := conn.ReadFromUDPAddrPort(buf)
	if err != nil {
		t.Fatal(err)
	}
	h, err := parse(buf[:n])
	if err != nil || h.kind != kindReply || h.seq != 7 || n != 100 || from != to {
		t.Fatalf("answer %+v %v from %s; want the request echoed as a reply from %s", h, err, from, to)
	}
	// The counters move after the datagrams are handled, so the reply can
	// arrive before Replies counts it.
	await.Eventually(t, within, "one reply and three drops counted", func() error {
		if b.resp.Dropped() != 3 || b.resp.Replies() != 1 {
			return fmt.Errorf("replies %d dropped %d, want 1 and 3", b.resp.Replies(), b.resp.Dropped())
		}
		return nil
	})
}
