package test

import (
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/netagent/netagent/agent"
	"github.com/netagent/netagent/internal/lab"
	"github.com/netagent/netagent/probe"
	"github.com/netagent/netagent/subnetfile"
)

// leaseSubnets are the subnets of a host's lease, IPv4 first, of the
// families it has.
func leaseSubnets(info subnetfile.Info) []netip.Prefix {
	var out []netip.Prefix
	for _, sn := range []netip.Prefix{info.Subnet, info.IPv6Subnet} {
		if sn.IsValid() {
			out = append(out, sn)
		}
	}
	return out
}

// awaitAllProbed waits until every host reports every subnet of every
// other host probed and reachable, at the vxlan overlay address of that
// subnet's family, with both probes' RTTs; it logs the RTTs one host
// measured.
func (c *cluster) awaitAllProbed(t *testing.T, infos map[string]subnetfile.Info) {
	t.Helper()
	start := time.Now()
	for _, h := range c.hosts() {
		for _, peer := range c.hosts() {
			if peer == h {
				continue
			}
			for _, sn := range leaseSubnets(infos[peer.Name]) {
				p := c.awaitPeer(t, h, sn.String(), "reachable", probeReachable)
				if want := probe.OverlayAddr("vxlan", sn).String(); p.Probe.Overlay != want || p.Probe.RTTMs <= 0 || p.Probe.LargeRTTMs <= 0 ||
					p.Probe.LastSuccess == nil || p.Probe.Cause != "" {
					t.Errorf("%s → %s (%s): %+v; want probed at %s, both RTTs, no cause", h.Name, peer.Name, sn, p.Probe, want)
				}
				if h == c.hosts()[0] {
					t.Logf("%s → %s %s at %s: rtt %.3f ms, full-MTU rtt %.3f ms", h.Name, peer.Name, sn, p.Probe.Overlay, p.Probe.RTTMs, p.Probe.LargeRTTMs)
				}
			}
		}
	}
	t.Logf("every subnet of every peer reachable %v after the data plane was ready", time.Since(start).Round(time.Millisecond))
}

// TestProbeIPv6Only: on an IPv6-only vxlan overlay every agent probes
// every peer through flannel-v6.1 (its lease's /128) and finds it
// reachable; a peer whose flannel-v6.1 fdb entry is deleted on one host
// (repair disabled) is reported not programmed there.
func TestProbeIPv6Only(t *testing.T) {
	t.Parallel()
	args := append([]string{"--dataplane-repair=false"}, probeArgs...)
	c := newCluster(t, clusterOptions{Hosts: 2, RoutedHosts: 1, IPv6: lab.IPv6Only, Config: v6OnlyConfig, AgentArgs: args})
	infos := c.startAll()
	c.awaitReady()
	h1, h2 := c.hosts()[0], c.hosts()[1]
	sn2 := infos[h2.Name].IPv6Subnet.String()

	t.Run("healthy", func(t *testing.T) {
		c.awaitAllProbed(t, infos)
		for _, h := range c.hosts() {
			r, err := c.statusReport(h)
			if err != nil {
				t.Fatal(err)
			}
			if pr := r.Probe; !pr.Enabled || pr.Sent == 0 || pr.Answered == 0 || pr.Unreachable != 0 ||
				len(pr.Offloads) != 1 || pr.Offloads[0].Device != "flannel-v6.1" || !pr.Offloads[0].TxChecksum {
				t.Errorf("%s: probe report %+v offloads %+v; want probing, flannel-v6.1's offload on", h.Name, pr, pr.Offloads)
			}
			if errOut, ok := c.statusCheck(h); !ok {
				t.Errorf("%s: status --check failed in a healthy cluster: %s", h.Name, errOut)
			}
		}
	})

	t.Run("flannel-v6 fdb entry deleted, repair disabled", func(t *testing.T) {
		r, err := c.statusReport(h1)
		if err != nil {
			t.Fatal(err)
		}
		p2, err := peerIn(r, sn2)
		if err != nil {
			t.Fatal(err)
		}
		dst := h2.UnderlayV6.Addr()
		c.mustExec(h1.NS, "bridge", "fdb", "del", p2.VtepMAC, "dev", "flannel-v6.1", "dst", dst.String(), "self")
		broke := time.Now()
		p := c.awaitPeer(t, h1, sn2, "not-programmed", func(p *agent.PeerReport) error {
			if p.Programmed {
				return fmt.Errorf("still programmed")
			}
			return probeCause(probe.CauseNotProgrammed)(p)
		})
		t.Logf("%s: %s %s after %v; kernel: %s", h1.Name, sn2, p.Probe.Cause, time.Since(broke).Round(time.Millisecond), p.Error)
		if errOut, ok := c.statusCheck(h1); ok || !strings.Contains(errOut, sn2) {
			t.Errorf("status --check exit ok=%t, stderr %q; want exit 1 naming %s", ok, errOut, sn2)
		}
		// (h2's probes of h1 fail meanwhile too: h1's answers need the
		// fdb entry that is gone.)

		// Put back as the agent makes it: programmed and reachable again.
		nh := c.handle(h1.NS)
		link, err := nh.LinkByName("flannel-v6.1")
		if err != nil {
			t.Fatal(err)
		}
		mac, _ := net.ParseMAC(p2.VtepMAC)
		if err := nh.NeighSet(&netlink.Neigh{LinkIndex: link.Attrs().Index, Family: syscall.AF_BRIDGE, State: netlink.NUD_PERMANENT,
			Flags: netlink.NTF_SELF, IP: net.IP(dst.AsSlice()), HardwareAddr: mac}); err != nil {
			t.Fatal(err)
		}
		c.awaitPeer(t, h1, sn2, "programmed and reachable again", func(p *agent.PeerReport) error {
			if !p.Programmed {
				return fmt.Errorf("not programmed: %s", p.Error)
			}
			return probeReachable(p)
		})
	})
}

// TestProbeDualStack: on a dual-stack vxlan overlay every agent probes
// each peer once per family (flannel.1 and flannel-v6.1) and reports both
// in one list; when VXLAN over IPv6 is dropped on host 3, the others
// report its IPv6 subnet no-answer (after a checksum offload trial on
// flannel-v6.1) and its IPv4 subnet still reachable.
func TestProbeDualStack(t *testing.T) {
	t.Parallel()
	args := append(append([]string{}, probeArgs...), healthzArgs...)
	c := newCluster(t, clusterOptions{Hosts: 2, RoutedHosts: 1, IPv6: lab.DualStack, Config: dualVXLANConfig, AgentArgs: args})
	infos := c.startAll()
	c.awaitReady()
	hosts := c.hosts()
	h1, h2, h3 := hosts[0], hosts[1], hosts[2]

	t.Run("healthy", func(t *testing.T) {
		c.awaitAllProbed(t, infos)
		r, err := c.statusReport(h1)
		if err != nil {
			t.Fatal(err)
		}
		// --probe-rate=50 is split between the families.
		if pr := r.Probe; !pr.Enabled || pr.Rate != 50 || pr.Unreachable != 0 ||
			!slices.Equal(offloadDevices(pr), []string{"flannel.1", "flannel-v6.1"}) || !pr.Offloads[0].TxChecksum || !pr.Offloads[1].TxChecksum {
			t.Errorf("probe report %+v offloads %+v; want rate 50 in all, both devices' offload on", pr, pr.Offloads)
		}
		fams := mustScrape(t, h1)
		for _, dev := range []string{"flannel.1", "flannel-v6.1"} {
			if v := metricLabeled(fams, agent.MetricTxCsumOffload, "device", dev); v != 1 {
				t.Errorf("%s{device=%s} = %v, want 1", agent.MetricTxCsumOffload, dev, v)
			}
		}
		for _, fam := range []string{"ipv4", "ipv6"} {
			if n := metricLabeled(fams, agent.MetricProbeRTT, "family", fam); n <= 0 {
				t.Errorf("%s{family=%s} count %v, want > 0", agent.MetricProbeRTT, fam, n)
			}
		}
		if len(r.Peers) != 4 {
			t.Errorf("%d peers in the report, want 2 per family", len(r.Peers))
		}
		out := c.mustExec(h1.NS, binaries(t)["./cmd/netagent"], "status", "--status-socket="+statusSocket(h1))
		if strings.Count(out, " yes ") != 4 {
			t.Errorf("status table does not show 4 subnets reachable:\n%s", out)
		}
		if strings.Count(out, "tx csum offload") != 2 {
			t.Errorf("status does not show both devices' offload:\n%s", out)
		}
		if errOut, ok := c.statusCheck(h1); !ok {
			t.Errorf("status --check failed in a healthy cluster: %s", errOut)
		}
	})

	t.Run("VXLAN over IPv6 dropped", func(t *testing.T) {
		v4, v6 := infos[h3.Name].Subnet.String(), infos[h3.Name].IPv6Subnet.String()
		c.mustExec(h3.NS, "nft", "add table ip6 natest { chain in { type filter hook input priority 0; udp dport 8472 drop; }; }")
		broke := time.Now()
		for _, h := range []*lab.Host{h1, h2} {
			p := c.awaitPeer(t, h, v6, "no-answer, offload ruled out", func(p *agent.PeerReport) error {
				if err := probeCause(probe.CauseNoAnswer)(p); err != nil {
					return err
				}
				if !p.Probe.OffloadRuledOut {
					return fmt.Errorf("offload not ruled out yet: %+v", p.Probe)
				}
				return nil
			})
			t.Logf("%s: %s %s (offload ruled out) after %v: %s", h.Name, v6, p.Probe.Cause, time.Since(broke).Round(time.Millisecond), p.Probe.Detail)
			if !strings.Contains(p.Probe.Detail, "underlay answers") {
				t.Errorf("%s: detail %q; want the public IPv6 address to answer", h.Name, p.Probe.Detail)
			}
			r, err := c.statusReport(h)
			if err != nil {
				t.Fatal(err)
			}
			if p4, err := peerIn(r, v4); err != nil || probeReachable(p4) != nil {
				t.Errorf("%s: %s (IPv4) %+v, %v; want reachable while only VXLAN over IPv6 is dropped", h.Name, v4, p4, err)
			}
			if off := offloadOf(r.Probe, "flannel-v6.1"); off == nil || !off.TxChecksum || off.LastChange == nil || off.LastChange.Kind != probe.OffloadRestored {
				t.Errorf("%s: flannel-v6.1's offload %+v; want restored on after its trial", h.Name, off)
			}
			if off := offloadOf(r.Probe, "flannel.1"); off == nil || off.LastChange != nil {
				t.Errorf("%s: flannel.1's offload %+v; want untouched by the IPv6 trial", h.Name, off)
			}
			if r.Probe.Unreachable != 1 {
				t.Errorf("%s: %d unreachable, want 1", h.Name, r.Probe.Unreachable)
			}
			fams := mustScrape(t, h)
			if v := metricSum(fams, agent.MetricPeersUnreachable); v != 1 {
				t.Errorf("%s: %s = %v, want 1", h.Name, agent.MetricPeersUnreachable, v)
			}
			v4fail := metricLabeled(fams, agent.MetricProbeFailures, "family", "ipv4", "cause", string(probe.CauseNoAnswer))
			v6fail := metricLabeled(fams, agent.MetricProbeFailures, "family", "ipv6", "cause", string(probe.CauseNoAnswer))
			if v4fail != 0 || v6fail <= 0 {
				t.Errorf("%s: %s{cause=no-answer}: ipv4 %v, ipv6 %v; want 0 and more", h.Name, agent.MetricProbeFailures, v4fail, v6fail)
			}
			if out := c.mustExec(h.NS, "ethtool", "-k", "flannel-v6.1"); !strings.Contains(out, "tx-checksumming: on") {
				t.Errorf("%s: after the trial ethtool -k flannel-v6.1 says\n%s", h.Name, out)
			}
			if err := logContains(c.agent(h), `did not recover with TX checksum offload off; restored it" family=IPv6 device=flannel-v6.1`); err != nil {
				t.Errorf("%s: %v", h.Name, err)
			}
			errOut, ok := c.statusCheck(h)
			if ok || !strings.Contains(errOut, v6+" unreachable (no-answer)") || strings.Contains(errOut, v4) {
				t.Errorf("%s: status --check exit ok=%t, stderr %q; want exit 1 naming %s only", h.Name, ok, errOut, v6)
			}
		}
		c.mustExec(h3.NS, "nft", "delete table ip6 natest")
		for _, h := range []*lab.Host{h1, h2} {
			c.awaitPeer(t, h, v6, "reachable again", probeReachable)
		}
	})
}

// TestProbeHostGWDualStack: with host-gw, each family's path to a peer is
// probed at the peer's public address of that family.
func TestProbeHostGWDualStack(t *testing.T) {
	t.Parallel()
	c := newCluster(t, clusterOptions{Hosts: 2, IPv6: lab.DualStack, Config: dualHostGWConfig, AgentArgs: probeArgs})
	infos := c.startAll()
	c.awaitReady()
	h1, h2 := c.hosts()[0], c.hosts()[1]
	for _, f := range []struct {
		sn  netip.Prefix
		pub netip.Addr
	}{{infos[h2.Name].Subnet, h2.Underlay.Addr()}, {infos[h2.Name].IPv6Subnet, h2.UnderlayV6.Addr()}} {
		p := c.awaitPeer(t, h1, f.sn.String(), "reachable", probeReachable)
		t.Logf("%s at %s: rtt %.3f ms, full-MTU rtt %.3f ms", f.sn, p.Probe.Overlay, p.Probe.RTTMs, p.Probe.LargeRTTMs)
		if p.Probe.Overlay != f.pub.String() || p.Probe.LargeRTTMs <= 0 {
			t.Errorf("%s: probe %+v; want %s probed with full-MTU probes", f.sn, p.Probe, f.pub)
		}
	}
}
