package test

import (
	"fmt"
	"net"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/vishvananda/netlink"

	"github.com/netagent/netagent/agent"
	"github.com/netagent/netagent/internal/await"
	"github.com/netagent/netagent/internal/lab"
	"github.com/netagent/netagent/probe"
)

// probeArgs make the agents probe often enough for a test: each peer every
// second, at most 50 datagrams a second.
// Info level: debug would log every probe round.
var probeArgs = []string{"--probe-interval=1s", "--probe-rate=50", "--log-level=info"}

// probeWithin bounds how long a cause takes to show: one interval, a
// failing round (two lost overlay probes and two lost underlay probes of
// 1 s each), an offload trial's round, and room for a loaded machine.
const probeWithin = 20 * time.Second

// peerIn returns the peer with subnet sn in r.
// offloadDevices lists the devices of a probe report's offloads, in order.
func offloadDevices(pr agent.ProbeReport) []string {
	var devs []string
	for _, o := range pr.Offloads {
		devs = append(devs, o.Device)
	}
	return devs
}

// offloadOf is the offload report of device dev, nil when there is none.
func offloadOf(pr agent.ProbeReport, dev string) *agent.OffloadReport {
	for i := range pr.Offloads {
		if pr.Offloads[i].Device == dev {
			return &pr.Offloads[i]
		}
	}
	return nil
}

func peerIn(r *agent.Report, sn string) (*agent.PeerReport, error) {
	for i := range r.Peers {
		if r.Peers[i].Subnet == sn {
			return &r.Peers[i], nil
		}
	}
	return nil, fmt.Errorf("no peer %s in the report", sn)
}

// awaitPeer waits until h's agent reports the peer with subnet sn as ok
// says, and returns it.
func (c *cluster) awaitPeer(t *testing.T, h *lab.Host, sn, what string, ok func(*agent.PeerReport) error) *agent.PeerReport {
	t.Helper()
	var got *agent.PeerReport
	await.Eventually(t, probeWithin, fmt.Sprintf("%s: peer %s %s", h.Name, sn, what), func() error {
		r, err := c.statusReport(h)
		if err != nil {
			return err
		}
		p, err := peerIn(r, sn)
		if err != nil {
			return err
		}
		if err := ok(p); err != nil {
			return err
		}
		got = p
		return nil
	})
	return got
}

func probeReachable(p *agent.PeerReport) error {
	if p.Probe == nil || !p.Probe.Probed || !p.Probe.Reachable {
		return fmt.Errorf("probe %+v", p.Probe)
	}
	return nil
}

func probeCause(cause probe.Cause) func(*agent.PeerReport) error {
	return func(p *agent.PeerReport) error {
		if p.Probe == nil || !p.Probe.Probed || p.Probe.Reachable || p.Probe.Cause != string(cause) {
			return fmt.Errorf("probe %+v, want cause %s", p.Probe, cause)
		}
		return nil
	}
}

// statusCheck runs `netagent status --check` in h's namespace and returns
// its stderr and whether it exited 0.
//
// `netagent status` gives up on the socket after a few seconds and then
// says the agent is not answering; on a loaded machine that can happen to a
// running agent. The verdict is what the tests check, so the question is
// asked again while h's agent runs and the answer is only that.
func (c *cluster) statusCheck(h *lab.Host) (errOut string, ok bool) {
	c.t.Helper()
	await.Eventually(c.t, 2*time.Minute, h.Name+"'s status --check answered by the agent", func() error {
		_, stderr, err := c.runSplit(h.NS, binaries(c.t)["./cmd/netagent"], "status", "--check", "--status-socket="+statusSocket(h))
		errOut, ok = string(stderr), err == nil
		if p := c.agent(h); !ok && (strings.Contains(errOut, "not running") || strings.Contains(errOut, "not answering")) && p != nil && !p.Exited() {
			return fmt.Errorf("no answer from the running agent: %s", errOut)
		}
		return nil
	})
	return errOut, ok
}

// metricLabeled is the value of the counter or gauge name whose label has
// value; -1 when absent.
// metricLabeled sums the values (a histogram: its counts) of the series
// of name that carry every label=value pair of labels; -1 when none does.
func metricLabeled(fams map[string]*dto.MetricFamily, name string, labels ...string) float64 {
	sum, found := 0.0, false
	for _, m := range fams[name].GetMetric() {
		have := map[string]string{}
		for _, l := range m.GetLabel() {
			have[l.GetName()] = l.GetValue()
		}
		match := true
		for i := 0; i+1 < len(labels); i += 2 {
			if have[labels[i]] != labels[i+1] {
				match = false
			}
		}
		if !match {
			continue
		}
		found = true
		sum += metricValue(m)
	}
	if !found {
		return -1
	}
	return sum
}

func mustScrape(t *testing.T, h *lab.Host) map[string]*dto.MetricFamily {
	t.Helper()
	fams, err := scrape(t, h)
	if err != nil {
		t.Fatal(err)
	}
	return fams
}

// TestProbe: in a healthy 3-host vxlan cluster every agent finds every
// peer reachable; then host 3's path is broken in turn by a firewall
// dropping the VXLAN port (with the automatic offload trial), a deleted
// fdb entry (repair disabled), and a lower underlay MTU, and the others
// report it with the cause, in status, --check and metrics.
func TestProbe(t *testing.T) {
	t.Parallel()
	args := append(append([]string{"--dataplane-repair=false"}, probeArgs...), healthzArgs...)
	c := newCluster(t, clusterOptions{Hosts: 3, Config: vxlanConfig, AgentArgs: args})
	infos := c.startAll()
	c.awaitReady()
	hosts := c.hosts()
	h1, h2, h3 := hosts[0], hosts[1], hosts[2]
	sn := func(h *lab.Host) string { return infos[h.Name].Subnet.String() }

	t.Run("healthy", func(t *testing.T) {
		start := time.Now()
		for _, h := range hosts {
			for _, peer := range hosts {
				if peer == h {
					continue
				}
				p := c.awaitPeer(t, h, sn(peer), "reachable", probeReachable)
				if p.Probe.RTTMs <= 0 || p.Probe.LargeRTTMs <= 0 || p.Probe.LastSuccess == nil || p.Probe.Cause != "" {
					t.Errorf("%s → %s: %+v; want RTTs, a last success, no cause", h.Name, peer.Name, p.Probe)
				}
			}
		}
		t.Logf("all peers reachable %v after the data plane was ready", time.Since(start).Round(time.Millisecond))
		for _, h := range hosts {
			if errOut, ok := c.statusCheck(h); !ok {
				t.Errorf("%s: status --check failed in a healthy cluster: %s", h.Name, errOut)
			}
			r, err := c.statusReport(h)
			if err != nil {
				t.Fatal(err)
			}
			pr := r.Probe
			if off := offloadOf(pr, "flannel.1"); !pr.Enabled || pr.Sent == 0 || pr.Answered == 0 || pr.Unreachable != 0 || pr.Port != probe.DefaultPort ||
				len(pr.Offloads) != 1 || off == nil || !off.TxChecksum || !off.Auto || off.Mode != "auto" {
				t.Errorf("%s: probe report %+v offloads %+v", h.Name, pr, pr.Offloads)
			}
			fams := mustScrape(t, h)
			if n := metricSum(fams, agent.MetricProbeRTT); n <= 0 {
				t.Errorf("%s: %s count %v, want > 0", h.Name, agent.MetricProbeRTT, n)
			}
			if n := metricSum(fams, agent.MetricPeersUnreachable); n != 0 {
				t.Errorf("%s: %s = %v, want 0", h.Name, agent.MetricPeersUnreachable, n)
			}
			if v := metricLabeled(fams, agent.MetricTxCsumOffload, "device", "flannel.1"); v != 1 {
				t.Errorf("%s: %s = %v, want 1", h.Name, agent.MetricTxCsumOffload, v)
			}
		}
		out := c.mustExec(h1.NS, binaries(t)["./cmd/netagent"], "status", "--status-socket="+statusSocket(h1))
		if !strings.Contains(out, "REACH") || !strings.Contains(out, "CAUSE") || strings.Count(out, " yes ") != 2 {
			t.Errorf("status table does not show both peers reachable:\n%s", out)
		}
	})

	t.Run("vxlan port dropped", func(t *testing.T) {
		before := metricLabeled(mustScrape(t, h1), agent.MetricProbeFailures, "cause", string(probe.CauseNoAnswer))
		c.mustExec(h3.NS, "nft", "add table ip natest { chain in { type filter hook input priority 0; udp dport 8472 drop; }; }")
		broke := time.Now()
		for _, h := range []*lab.Host{h1, h2} {
			p := c.awaitPeer(t, h, sn(h3), "no-answer, offload ruled out", func(p *agent.PeerReport) error {
				if err := probeCause(probe.CauseNoAnswer)(p); err != nil {
					return err
				}
				if !p.Probe.OffloadRuledOut {
					return fmt.Errorf("offload not ruled out yet: %+v", p.Probe)
				}
				return nil
			})
			t.Logf("%s: %s %s (offload ruled out) after %v: %s", h.Name, sn(h3), p.Probe.Cause, time.Since(broke).Round(time.Millisecond), p.Probe.Detail)
		}
		for _, h := range []*lab.Host{h1, h2} {
			r, err := c.statusReport(h)
			if err != nil {
				t.Fatal(err)
			}
			off := offloadOf(r.Probe, "flannel.1")
			if off == nil || !off.TxChecksum || off.Trial || off.KeptOff || off.LastChange == nil ||
				off.LastChange.Kind != probe.OffloadRestored || !off.LastChange.TxChecksum {
				t.Errorf("%s: offload %+v; want restored on after a trial", h.Name, off)
			}
			if p, _ := peerIn(r, sn(h1)); h == h2 && (p == nil || probeReachable(p) != nil) {
				t.Errorf("%s: %s not reachable while only %s is cut: %+v", h.Name, sn(h1), h3.Name, p)
			}
			out := c.mustExec(h.NS, "ethtool", "-k", "flannel.1")
			if !strings.Contains(out, "tx-checksumming: on") {
				t.Errorf("%s: after the trial ethtool -k says\n%s", h.Name, out)
			}
			if err := logContains(c.agent(h), "did not recover with TX checksum offload off; restored it"); err != nil {
				t.Errorf("%s: %v", h.Name, err)
			}
			fams := mustScrape(t, h)
			for _, kind := range []string{probe.OffloadTrialOff, probe.OffloadRestored} {
				if v := metricLabeled(fams, agent.MetricCsumOffloadEvents, "kind", kind); v != 1 {
					t.Errorf("%s: %s{kind=%s} = %v, want 1", h.Name, agent.MetricCsumOffloadEvents, kind, v)
				}
			}
			if v := metricSum(fams, agent.MetricPeersUnreachable); v != 1 {
				t.Errorf("%s: %s = %v, want 1", h.Name, agent.MetricPeersUnreachable, v)
			}
			if h == h1 {
				if after := metricLabeled(fams, agent.MetricProbeFailures, "cause", string(probe.CauseNoAnswer)); after <= before {
					t.Errorf("%s{cause=no-answer} %v → %v, want it to grow", agent.MetricProbeFailures, before, after)
				}
			}
			errOut, ok := c.statusCheck(h)
			if ok || !strings.Contains(errOut, sn(h3)+" unreachable (no-answer)") || strings.Count(strings.TrimSpace(errOut), "\n") != 0 {
				t.Errorf("%s: status --check exit ok=%t, stderr %q; want exit 1 and one line naming %s", h.Name, ok, errOut, sn(h3))
			}
			// A peer's problem is not this agent's health.
			if code, hz, err := getHealthz(t, h); err != nil || code != http.StatusOK {
				t.Errorf("%s: /healthz %d %+v %v; want 200 while a peer is unreachable", h.Name, code, hz, err)
			}
		}
		c.mustExec(h3.NS, "nft", "delete table ip natest")
		fixed := time.Now()
		for _, h := range []*lab.Host{h1, h2} {
			c.awaitPeer(t, h, sn(h3), "reachable again", probeReachable)
		}
		t.Logf("reachable again %v after the rule was removed", time.Since(fixed).Round(time.Millisecond))
		await.Eventually(t, probeWithin, "status --check passes again", func() error {
			if errOut, ok := c.statusCheck(h1); !ok {
				return fmt.Errorf("%s", errOut)
			}
			return nil
		})
	})

	t.Run("fdb entry deleted, repair disabled", func(t *testing.T) {
		r, err := c.statusReport(h1)
		if err != nil {
			t.Fatal(err)
		}
		p2, err := peerIn(r, sn(h2))
		if err != nil {
			t.Fatal(err)
		}
		c.mustExec(h1.NS, "bridge", "fdb", "del", p2.VtepMAC, "dev", "flannel.1", "dst", h2.Underlay.Addr().String(), "self")
		broke := time.Now()
		p := c.awaitPeer(t, h1, sn(h2), "not-programmed", func(p *agent.PeerReport) error {
			if p.Programmed {
				return fmt.Errorf("still programmed")
			}
			return probeCause(probe.CauseNotProgrammed)(p)
		})
		t.Logf("%s: %s %s after %v; kernel: %s", h1.Name, sn(h2), p.Probe.Cause, time.Since(broke).Round(time.Millisecond), p.Error)
		if !strings.Contains(p.Error, "repair disabled") {
			t.Errorf("peer error %q does not say repair is disabled", p.Error)
		}
		out := c.mustExec(h1.NS, binaries(t)["./cmd/netagent"], "status", "--status-socket="+statusSocket(h1))
		if !strings.Contains(out, "not-programmed") || !strings.Contains(out, "MISMATCH") {
			t.Errorf("status table does not show %s not programmed:\n%s", sn(h2), out)
		}
		if errOut, ok := c.statusCheck(h1); ok || !strings.Contains(errOut, sn(h2)) {
			t.Errorf("status --check exit ok=%t, stderr %q; want exit 1 naming %s", ok, errOut, sn(h2))
		}
		fams := mustScrape(t, h1)
		if v := metricLabeled(fams, agent.MetricRepairs, "kind", "fdb"); v != 0 {
			t.Errorf("%s{kind=fdb} = %v with repair disabled, want 0", agent.MetricRepairs, v)
		}
		if e := vxlanEntries(t, c.handle(h1.NS), infos[h2.Name].Subnet); e.fdb {
			t.Errorf("the fdb entry came back with repair disabled")
		}
		// Put back by hand: the agent sees the kernel as wanted again.
		// Put back by hand as the agent makes it (`bridge fdb add ... self
		// permanent` would also set NUD_NOARP, which the agent does not
		// take for its own entry): the agent sees it as wanted again.
		nh := c.handle(h1.NS)
		link, err := nh.LinkByName("flannel.1")
		if err != nil {
			t.Fatal(err)
		}
		mac, _ := net.ParseMAC(p2.VtepMAC)
		if err := nh.NeighSet(&netlink.Neigh{LinkIndex: link.Attrs().Index, Family: syscall.AF_BRIDGE, State: netlink.NUD_PERMANENT,
			Flags: netlink.NTF_SELF, IP: net.IP(h2.Underlay.Addr().AsSlice()), HardwareAddr: mac}); err != nil {
			t.Fatal(err)
		}
		c.awaitPeer(t, h1, sn(h2), "programmed and reachable again", func(p *agent.PeerReport) error {
			if !p.Programmed {
				return fmt.Errorf("not programmed: %s", p.Error)
			}
			return probeReachable(p)
		})
	})

	t.Run("underlay MTU lowered", func(t *testing.T) {
		c.mustExec(c.lab.SwitchNS(), "ip", "link", "set", h3.Name, "mtu", "1400")
		c.mustExec(h3.NS, "ip", "link", "set", "eth0", "mtu", "1400")
		broke := time.Now()
		for _, h := range []*lab.Host{h1, h2} {
			p := c.awaitPeer(t, h, sn(h3), "large-packets-lost", probeCause(probe.CauseLargePacketsLost))
			t.Logf("%s: %s %s after %v: %s", h.Name, sn(h3), p.Probe.Cause, time.Since(broke).Round(time.Millisecond), p.Probe.Detail)
			if p.Probe.RTTMs <= 0 {
				t.Errorf("%s: small probe RTT %v, want the small probes to pass", h.Name, p.Probe.RTTMs)
			}
		}
		c.awaitPeer(t, h1, sn(h2), "reachable (its link is untouched)", probeReachable)
	})
}

// TestProbeHostGW: with host-gw, peers are probed on the underlay path
// their routes take, small and full-MTU, and found reachable.
func TestProbeHostGW(t *testing.T) {
	t.Parallel()
	c := newCluster(t, clusterOptions{Hosts: 2, Config: `{"Network":"10.5.0.0/16","Backend":{"Type":"host-gw"}}`, AgentArgs: probeArgs})
	infos := c.startAll()
	c.awaitReady()
	h1, h2 := c.hosts()[0], c.hosts()[1]
	p := c.awaitPeer(t, h1, infos[h2.Name].Subnet.String(), "reachable", probeReachable)
	if p.Probe.Overlay != h2.Underlay.Addr().String() || p.Probe.LargeRTTMs <= 0 {
		t.Errorf("probe %+v; want %s probed with full-MTU probes", p.Probe, h2.Underlay.Addr())
	}
	r, err := c.statusReport(h1)
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Probe.Offloads) != 0 {
		t.Errorf("host-gw reports a checksum offload: %+v", r.Probe.Offloads)
	}
}
