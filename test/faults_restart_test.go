package test

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/netagent/netagent/internal/lab"
)

// TestFaultRestarts (fault 4): the agents of two hosts are stopped 50 times
// with SIGTERM or SIGKILL, at a random point of their startup or of
// reconciling a lease change, and started again. After each restart the
// kernel state converges to exactly what etcd says (no duplicate, no
// orphan route, neighbour, fdb entry or masquerade rule), and the
// containers' ping across the hosts loses nothing over the whole run: a
// lost echo request fails the test with the restarts around it.
func TestFaultRestarts(t *testing.T) {
	t.Parallel()
	c := newCluster(t, clusterOptions{Hosts: 2, Config: vxlanConfig})
	infos := c.startAll()
	c.awaitReady()
	h1, h2 := c.hosts()[0], c.hosts()[1]
	c1, c2 := c.addContainer(h1), c.addContainer(h2)
	if err := c.ping(c1.NS, c2.IP, lab.PingOptions{Count: 2}); err != nil {
		t.Fatal(err)
	}
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, seed))
	converged := func(h *lab.Host) time.Duration {
		t.Helper()
		want := wantKernelPeers(peersOf(hostLeases(t, c.etcd), infos[h.Name].Subnet))
		return awaitKernelPeers(t, c.handle(h.NS), want, 60*time.Second, h.Name+" converged")
	}
	converged(h1)
	converged(h2)

	pr := startPing(t, c1.NS, c2.IP, 100*time.Millisecond, 3000)
	var worst time.Duration
	var worstWhat string
	signals := map[string]int{}
	// What happened when, to place a lost ping among the restarts.
	type event struct {
		at   time.Time
		what string
	}
	var events []event
	record := func(what string, args ...any) {
		events = append(events, event{time.Now(), fmt.Sprintf(what, args...)})
	}
	for i := range 50 {
		h := h1
		if rng.IntN(4) == 0 {
			h = h2
		}
		sig, sigName := syscall.SIGTERM, "SIGTERM"
		if rng.IntN(2) == 0 {
			sig, sigName = syscall.SIGKILL, "SIGKILL"
		}
		phase := "startup"
		old := c.agent(h)
		if rng.IntN(2) == 0 {
			// Startup: a fresh agent, stopped while it reads the config,
			// acquires, writes files or programs for the first time.
			old.Stop(5 * time.Second)
			record("restart %d: %s's agent stopped, started afresh", i, h.Name)
			old = c.startAgent(h)
			<-time.After(time.Duration(rng.IntN(400)) * time.Millisecond)
		} else {
			// Reconciling: a lease appears or goes, and the agent is
			// stopped while it applies the change.
			phase = "reconcile"
			n := rng.IntN(8)
			churn := fakePeer{netip.MustParsePrefix(fmt.Sprintf("10.5.%d.0/24", 230+n)),
				netip.MustParseAddr(fmt.Sprintf("192.168.77.%d", 230+n)), fmt.Sprintf("0a:00:00:00:02:%02x", n)}
			if rng.IntN(2) == 0 {
				putLease(t, c.etcd, leaseKey(churn.Subnet), churn.value(), 0)
				record("restart %d: lease %s put", i, churn.Subnet)
			} else {
				deleteKey(t, c.etcd, leaseKey(churn.Subnet))
				record("restart %d: lease %s deleted", i, churn.Subnet)
			}
			<-time.After(time.Duration(rng.IntN(30)) * time.Millisecond)
		}
		if err := old.Signal(sig); err != nil && err != os.ErrProcessDone {
			t.Fatal(err)
		}
		select {
		case <-old.Done():
		case <-time.After(time.Minute):
			t.Fatalf("restart %d: %s's agent did not exit within a minute of %s", i, h.Name, sigName)
		}
		signals[sigName+" during "+phase]++
		record("restart %d: %s's agent exited on %s during %s", i, h.Name, sigName, phase)
		restarted := time.Now()
		c.startAgent(h)
		converged(h)
		other := h1
		if h == h1 {
			other = h2
		}
		converged(other)
		record("restart %d: both hosts converged", i)
		if d := time.Since(restarted); d > worst {
			worst, worstWhat = d, fmt.Sprintf("restart %d of %s (%s during %s)", i, h.Name, sigName, phase)
		}
	}
	t.Logf("50 restarts: %v; slowest convergence %v (%s)", signals, worst.Round(time.Millisecond), worstWhat)
	c.awaitReady()
	for _, h := range c.hosts() {
		converged(h)
		checkMasqRules(t, c, h)
	}
	pr.stop()
	r := pr.wait(t)
	t.Logf("ping during the restarts: %d sent, %d received", r.sent, r.received)
	if r.sent < 20 {
		t.Errorf("ping sent only %d echo requests", r.sent)
	}
	for _, seq := range r.lost {
		at := r.sentAt(seq)
		var near []string
		for _, e := range events {
			if d := e.at.Sub(at); d > -2*time.Second && d < 2*time.Second {
				near = append(near, fmt.Sprintf("%+v %s", d.Round(time.Millisecond), e.what))
			}
		}
		t.Errorf("icmp_seq=%d (sent about %s) was not answered; events within 2 s of it:\n\t%s\nagents' logs within 1 s of it:\n%s",
			seq, at.Format("15:04:05.000"), strings.Join(near, "\n\t"), agentLogsAround(t, c, at, time.Second))
	}
}

// checkMasqRules asserts that h's masquerade and forward chains hold each
// rule once and are jumped to once.
func checkMasqRules(t *testing.T, c *cluster, h *lab.Host) {
	t.Helper()
	for _, chk := range []struct {
		table, chain, from string
		rules              int
	}{
		{"nat", "FLANNEL-POSTRTG", "POSTROUTING", 6},
		{"filter", "FLANNEL-FWD", "FORWARD", 2},
	} {
		out := c.mustExec(h.NS, "iptables", "-w", "-t", chk.table, "-S", chk.chain)
		rules := grep(strings.Split(out, "\n"), "-A "+chk.chain+" ")
		seen := map[string]bool{}
		for _, r := range rules {
			if seen[r] {
				t.Errorf("%s: duplicate rule %q", h.Name, r)
			}
			seen[r] = true
		}
		if len(rules) != chk.rules {
			t.Errorf("%s: %s holds %d rules, want %d:\n%s", h.Name, chk.chain, len(rules), chk.rules, out)
		}
		out = c.mustExec(h.NS, "iptables", "-w", "-t", chk.table, "-S", chk.from)
		if n := len(grep(strings.Split(out, "\n"), "-j "+chk.chain)); n != 1 {
			t.Errorf("%s: %d jumps from %s to %s, want 1:\n%s", h.Name, n, chk.from, chk.chain, out)
		}
	}
}

// agentLogsAround returns the lines that every agent started in c's lab
// logged within d of at, each after its log file's name, in time order.
func agentLogsAround(t *testing.T, c *cluster, at time.Time, d time.Duration) string {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(c.lab.Dir(), "logs", "*-netagent.log"))
	if err != nil {
		return err.Error()
	}
	type line struct {
		at   time.Time
		text string
	}
	var lines []line
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			return err.Error()
		}
		for _, l := range strings.Split(string(b), "\n") {
			ts, _, ok := strings.Cut(strings.TrimPrefix(l, "time="), " ")
			when, err := time.Parse(time.RFC3339Nano, ts)
			if !ok || err != nil || when.Sub(at).Abs() > d {
				continue
			}
			lines = append(lines, line{when, filepath.Base(f) + ": " + l})
		}
	}
	slices.SortStableFunc(lines, func(a, b line) int { return a.at.Compare(b.at) })
	var out strings.Builder
	for _, l := range lines {
		out.WriteString("\t" + l.text + "\n")
	}
	return out.String()
}
