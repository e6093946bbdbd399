package probe

import (
	"errors"
	"log/slog"
	"math/rand/v2"
	"net/netip"
	"slices"
	"testing"
	"time"
)

func TestWireRoundTrip(t *testing.T) {
	for _, size := range []int{headerLen, 100, 1422, 65507} {
		h := header{kind: kindRequest, size: size, seq: 1<<63 + 5, sent: -42}
		got, err := parse(h.encode(make([]byte, size)))
		if err != nil || got != h {
			t.Errorf("size %d: parse(encode(%+v)) = %+v, %v", size, h, got, err)
		}
	}
}

func TestParseRejects(t *testing.T) {
	good := header{kind: kindRequest, size: 40, seq: 1}.encode(make([]byte, 40))
	mod := func(f func(b []byte) []byte) []byte { return f(slices.Clone(good)) }
	cases := map[string][]byte{
		"empty":        nil,
		"short":        good[:headerLen-1],
		"bad magic":    mod(func(b []byte) []byte { b[0] = 'X'; return b }),
		"bad version":  mod(func(b []byte) []byte { b[4] = 2; return b }),
		"bad kind":     mod(func(b []byte) []byte { b[5] = 3; return b }),
		"truncated":    good[:39],
		"longer":       append(slices.Clone(good), 0),
		"size too big": mod(func(b []byte) []byte { b[6], b[7] = 0xff, 0xff; return b }),
	}
	for name, b := range cases {
		if _, err := parse(b); !errors.Is(err, errBadDatagram) {
			t.Errorf("%s: parse = %v, want errBadDatagram", name, err)
		}
	}
}

func FuzzParse(f *testing.F) {
	f.Add(header{kind: kindReply, size: 30, seq: 9}.encode(make([]byte, 30)))
	f.Add([]byte("NAPB"))
	f.Fuzz(func(t *testing.T, b []byte) {
		h, err := parse(b)
		if err != nil {
			return
		}
		if h.size != len(b) || (h.kind != kindRequest && h.kind != kindReply) {
			t.Fatalf("accepted %+v for %d bytes", h, len(b))
		}
		again, err := parse(h.encode(make([]byte, h.size)))
		if err != nil || again != h {
			t.Fatalf("re-encoding %+v gives %+v, %v", h, again, err)
		}
	})
}

// TestLimiter checks the bound the prober and the responder rely on, on a
// clock of its own (the limiter's *At methods): the burst goes at once,
// then one token every 1/rate; no more than the burst is saved up; and in
// any window, however the demand comes, no more than burst + rate × window
// tokens are handed out.
func TestLimiter(t *testing.T) {
	l := newLimiter(10, 2)
	t0 := time.Unix(1000, 0)
	var waits []time.Duration
	for range 4 {
		waits = append(waits, l.ReserveN(t0, 1).DelayFrom(t0))
	}
	want := []time.Duration{0, 0, 100 * time.Millisecond, 200 * time.Millisecond}
	for i := range want {
		if d := waits[i] - want[i]; d < -time.Microsecond || d > time.Microsecond {
			t.Errorf("wait %d = %v, want %v", i, waits[i], want[i])
		}
	}
	// After a long pause no more than the burst is saved up.
	later := t0.Add(time.Hour)
	if !l.AllowN(later, 1) || !l.AllowN(later, 1) || l.AllowN(later, 1) {
		t.Error("after an hour: want exactly 2 tokens")
	}
	// Over 10 s at 10/s, a demand every millisecond gets 100.
	n := 0
	for ms := range 10000 {
		if l.AllowN(later.Add(time.Duration(ms+1)*time.Millisecond), 1) {
			n++
		}
	}
	if n != 100 {
		t.Errorf("allowed %d in 10 s at 10/s, want 100", n)
	}

	// Random demand in bursts and pauses: in every window between two
	// grants, at most burst + rate × window grants.
	const r, burst = 50, 3
	rng := rand.New(rand.NewPCG(1, 2))
	l = newLimiter(r, burst)
	now := t0
	var granted []time.Time
	for range 20000 {
		now = now.Add(time.Duration(rng.IntN(int(40 * time.Millisecond))))
		for range rng.IntN(5) {
			if l.AllowN(now, 1) {
				granted = append(granted, now)
			}
		}
	}
	if len(granted) < 1000 {
		t.Fatalf("only %d grants: the demand did not exercise the bound", len(granted))
	}
	for i := range granted {
		for j := i; j < len(granted) && j < i+4*burst+4*r; j++ {
			window := granted[j].Sub(granted[i]).Seconds()
			if n := j - i + 1; float64(n) > burst+r*window+1e-9 {
				t.Fatalf("%d grants in %.3f s: over burst %d + %d/s", n, window, burst, r)
			}
		}
	}
}

func TestOverlayAddr(t *testing.T) {
	cases := []struct{ typ, subnet, want string }{
		{"vxlan", "10.5.58.0/24", "10.5.58.0"},
		{"vxlan", "10.5.58.7/24", "10.5.58.0"},
		{"host-gw", "10.5.58.0/24", "10.5.58.1"},
		{"vxlan", "fc00:5:0:11::/64", "fc00:5:0:11::"},
		{"vxlan", "fc00:5:0:11::7/64", "fc00:5:0:11::"},
		{"host-gw", "fc00:5:0:11::/64", "fc00:5:0:11::1"},
	}
	for _, c := range cases {
		if got := OverlayAddr(c.typ, netip.MustParsePrefix(c.subnet)); got.String() != c.want {
			t.Errorf("OverlayAddr(%s, %s) = %s, want %s", c.typ, c.subnet, got, c.want)
		}
	}
}

func TestConfigValidate(t *testing.T) {
	ok := Config{LocalOverlay: netip.MustParseAddr("10.5.1.0"), MTU: 1450}
	cases := []struct {
		name string
		mod  func(*Config)
		bad  bool
	}{
		{"minimal", func(*Config) {}, false},
		{"no overlay address", func(c *Config) { c.LocalOverlay = netip.Addr{} }, true},
		{"IPv4 public", func(c *Config) { c.LocalPublic = netip.MustParseAddr("192.168.1.1") }, false},
		{"IPv6 overlay", func(c *Config) { c.LocalOverlay = netip.MustParseAddr("fc00:5:0:1::") }, false},
		{"IPv6 overlay and public", func(c *Config) {
			c.LocalOverlay, c.LocalPublic = netip.MustParseAddr("fc00:5:0:1::"), netip.MustParseAddr("fd00::1")
		}, false},
		{"IPv4 overlay, IPv6 public", func(c *Config) { c.LocalPublic = netip.MustParseAddr("fd00::1") }, true},
		{"IPv6 overlay, IPv4 public", func(c *Config) {
			c.LocalOverlay, c.LocalPublic = netip.MustParseAddr("fc00:5:0:1::"), netip.MustParseAddr("192.168.1.1")
		}, true},
		{"IPv4-mapped overlay", func(c *Config) { c.LocalOverlay = netip.MustParseAddr("::ffff:10.5.1.0") }, true},
		{"unspecified overlay", func(c *Config) { c.LocalOverlay = netip.IPv6Unspecified() }, true},
		{"no MTU", func(c *Config) { c.MTU = 0 }, true},
		{"MTU too small for a probe", func(c *Config) { c.MTU = 51 }, true},
		{"smallest MTU", func(c *Config) { c.MTU = 52 }, false},
		{"IPv6 MTU too small for a probe", func(c *Config) {
			c.LocalOverlay, c.MTU = netip.MustParseAddr("fc00:5:0:1::"), 71
		}, true},
		{"smallest IPv6 MTU", func(c *Config) { c.LocalOverlay, c.MTU = netip.MustParseAddr("fc00:5:0:1::"), 72 }, false},
		{"bad port", func(c *Config) { c.Port = 70000 }, true},
		{"negative rate", func(c *Config) { c.Rate = -1 }, true},
	}
	for _, c := range cases {
		cfg := ok
		c.mod(&cfg)
		if err := cfg.Validate(); (err != nil) != c.bad {
			t.Errorf("%s: Validate() = %v, want error %t", c.name, err, c.bad)
		}
	}
}

// fakeSwitch is an OffloadSwitch in memory, recording what was set.
type fakeSwitch struct {
	on  bool
	set []bool
	err error
}

func (f *fakeSwitch) Device() string            { return "flannel.1" }
func (f *fakeSwitch) TxChecksum() (bool, error) { return f.on, f.err }
func (f *fakeSwitch) SetTxChecksum(on bool) error {
	if f.err != nil {
		return f.err
	}
	f.on = on
	f.set = append(f.set, on)
	return nil
}

// TestCsumAuto drives the offload state machine with rounds: each step is
// a round's outcome for a peer, started some time after the first.
func TestCsumAuto(t *testing.T) {
	pA, pB := netip.MustParsePrefix("10.5.1.0/24"), netip.MustParsePrefix("10.5.2.0/24")
	type step struct {
		peer     netip.Prefix
		startAt  time.Duration // when the round started, from t0
		cause    Cause
		smallOK  bool
		noAnswer []netip.Prefix
		// wanted after the step
		reprobe  []netip.Prefix
		ruledOut bool
	}
	cases := []struct {
		name    string
		startOn bool
		auto    bool
		steps   []step
		wantSet []bool
		wantSt  OffloadStatus
	}{
		{
			name: "path recovers with offload off: kept off", startOn: true, auto: true,
			steps: []step{
				{peer: pA, startAt: 0, cause: CauseNoAnswer, noAnswer: []netip.Prefix{pB}, reprobe: []netip.Prefix{pA, pB}},
				{peer: pB, startAt: 0, cause: CauseNoAnswer},                          // started before the trial: ignored
				{peer: pB, startAt: 2 * time.Second, cause: CauseNone, smallOK: true}, // recovered
				{peer: pA, startAt: 3 * time.Second, cause: CauseNoAnswer, ruledOut: true},
			},
			wantSet: []bool{false},
			wantSt:  OffloadStatus{Device: "flannel.1", Auto: true, TxChecksum: false, KeptOff: true, Peers: []netip.Prefix{pA, pB}},
		},
		{
			name: "path does not recover: restored, peers ruled out, no second trial", startOn: true, auto: true,
			steps: []step{
				{peer: pA, startAt: 0, cause: CauseNoAnswer, noAnswer: []netip.Prefix{pB}, reprobe: []netip.Prefix{pA, pB}},
				{peer: pA, startAt: 2 * time.Second, cause: CauseNoAnswer},
				{peer: pB, startAt: 2 * time.Second, cause: CauseUnderlayUnreachable},
				{peer: pA, startAt: 3 * time.Second, cause: CauseNoAnswer, ruledOut: true},
			},
			wantSet: []bool{false, true},
			wantSt:  OffloadStatus{Device: "flannel.1", Auto: true, TxChecksum: true},
		},
		{
			name: "ruled-out peer is tried again after it recovered", startOn: true, auto: true,
			steps: []step{
				{peer: pA, startAt: 0, cause: CauseNoAnswer, reprobe: []netip.Prefix{pA}},
				{peer: pA, startAt: 2 * time.Second, cause: CauseNoAnswer, ruledOut: true},
				{peer: pA, startAt: 3 * time.Second, cause: CauseNone, smallOK: true},
				{peer: pA, startAt: 4 * time.Second, cause: CauseNoAnswer, reprobe: []netip.Prefix{pA}},
			},
			wantSet: []bool{false, true, false},
			wantSt:  OffloadStatus{Device: "flannel.1", Auto: true, TxChecksum: false, Trial: true},
		},
		{
			name: "offload already off: nothing to try", startOn: false, auto: true,
			steps: []step{
				{peer: pA, startAt: 0, cause: CauseNoAnswer, ruledOut: true},
			},
			wantSt: OffloadStatus{Device: "flannel.1", Auto: true, TxChecksum: false},
		},
		{
			name: "auto off: reported, never changed", startOn: true, auto: false,
			steps: []step{
				{peer: pA, startAt: 0, cause: CauseNoAnswer},
				{peer: pA, startAt: time.Second, cause: CauseLargePacketsLost, smallOK: true},
			},
			wantSt: OffloadStatus{Device: "flannel.1", Auto: false, TxChecksum: true},
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			sw := &fakeSwitch{on: c.startOn}
			a := newCsumAuto(sw, c.auto, time.Minute, slog.New(slog.DiscardHandler))
			t0 := time.Now()
			for i, s := range c.steps {
				now := t0.Add(s.startAt + time.Second/2)
				reprobe, ruledOut := a.observe(now, s.peer, t0.Add(s.startAt), s.cause, s.smallOK, s.noAnswer)
				if !slices.Equal(reprobe, s.reprobe) || ruledOut != s.ruledOut {
					t.Errorf("step %d: reprobe %v ruled out %t; want %v %t", i, reprobe, ruledOut, s.reprobe, s.ruledOut)
				}
			}
			st := a.status()
			st.Since = time.Time{}
			if !slices.Equal(sw.set, c.wantSet) || st.TxChecksum != sw.on ||
				st.Trial != c.wantSt.Trial || st.KeptOff != c.wantSt.KeptOff || st.TxChecksum != c.wantSt.TxChecksum ||
				st.Auto != c.wantSt.Auto || !slices.Equal(st.Peers, c.wantSt.Peers) {
				t.Errorf("set %v, status %+v; want set %v, status %+v", sw.set, *st, c.wantSet, c.wantSt)
			}
			if len(a.takeEvents()) != len(c.wantSet)+btoi(c.wantSt.KeptOff) {
				t.Error("one event per change wanted")
			}
		})
	}
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}

func TestCsumAutoTrialTimesOut(t *testing.T) {
	pA := netip.MustParsePrefix("10.5.1.0/24")
	sw := &fakeSwitch{on: true}
	a := newCsumAuto(sw, true, 5*time.Second, slog.New(slog.DiscardHandler))
	t0 := time.Now()
	a.observe(t0, pA, t0, CauseNoAnswer, false, nil)
	a.tick(t0.Add(4 * time.Second))
	if sw.on || !a.st.Trial {
		t.Fatalf("trial ended early: on %t status %+v", sw.on, a.st)
	}
	a.tick(t0.Add(6 * time.Second))
	if !sw.on || a.st.Trial || !slices.Equal(sw.set, []bool{false, true}) {
		t.Errorf("after the timeout: on %t set %v status %+v; want restored", sw.on, sw.set, a.st)
	}
	if _, ruledOut := a.observe(t0.Add(7*time.Second), pA, t0.Add(6*time.Second), CauseNoAnswer, false, nil); !ruledOut {
		t.Error("peer of a timed-out trial is not ruled out")
	}
}

func TestCsumAutoSwitchError(t *testing.T) {
	sw := &fakeSwitch{on: true}
	a := newCsumAuto(sw, true, time.Minute, slog.New(slog.DiscardHandler))
	sw.err = errors.New("ioctl: no such device")
	now := time.Now()
	reprobe, _ := a.observe(now, netip.MustParsePrefix("10.5.1.0/24"), now, CauseNoAnswer, false, nil)
	if reprobe != nil || a.st.Trial || a.status().Err == "" {
		t.Errorf("with a failing switch: reprobe %v status %+v; want no trial and the error", reprobe, a.st)
	}
}

func TestMergeStatus(t *testing.T) {
	peer := func(s string) PeerHealth { return PeerHealth{Peer: Peer{Subnet: netip.MustParsePrefix(s)}} }
	off := &OffloadStatus{Device: "flannel-v6.1"}
	v4 := Status{Peers: []PeerHealth{peer("10.5.2.0/24"), peer("10.5.9.0/24")}, Interval: 10 * time.Second, Rate: 10, Sent: 7, Answered: 5}
	v6 := Status{Peers: []PeerHealth{peer("fc00:5:0:1::/64"), peer("fc00:5:0:2::/64")}, Interval: 12 * time.Second, Rate: 10, Sent: 3, Answered: 2, Offload: off}
	m := MergeStatus(v6, v4)
	var got []string
	for _, p := range m.Peers {
		got = append(got, p.Subnet.String())
	}
	want := []string{"10.5.2.0/24", "10.5.9.0/24", "fc00:5:0:1::/64", "fc00:5:0:2::/64"}
	if !slices.Equal(got, want) || m.Interval != 12*time.Second || m.Rate != 20 || m.Sent != 10 || m.Answered != 7 || m.Offload != off {
		t.Errorf("MergeStatus = peers %v, %+v; want peers %v, interval 12s, rate 20, sent 10, answered 7, the IPv6 offload", got, m, want)
	}
	if m := MergeStatus(); m.Peers != nil || m.Rate != 0 {
		t.Errorf("MergeStatus() = %+v, want zero", m)
	}
}
