package bench

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// The agent benchmarks run the real binaries (`netagent run` on lab hosts,
// etcd in the lab) and measure what the data-plane benchmarks cannot: the
// agent as a whole, from process start.

// agentPeers is the number of peer leases of the 5,000-peer benchmarks.
const agentPeers = dpPeers

// agentConfig is 10.0.0.0/8 cut into /24s, vxlan: room for 5,000 peers
// (dpPeer) and the agent's own lease.
const agentConfig = `{"Network":"10.0.0.0/8","Backend":{"Type":"vxlan"}}`

// agentIdleWindow is how long BenchmarkAgentIdle watches the idle agent:
// one default --resync-interval, so that one full resync pass falls in
// the window.
const agentIdleWindow = 30 * time.Second

// agentPeersLab is a one-host lab whose etcd holds the network config and
// agentPeers vxlan leases.
func agentPeersLab(b *testing.B) (*agentLab, clientv3.LeaseID, func()) {
	al, closeLab := newAgentLab(b, 1, agentConfig)
	id := al.putPeerLeases(0, agentPeers)
	return al, id, closeLab
}

// BenchmarkAgentColdStart starts `netagent run` on a host whose etcd
// holds 5,000 vxlan peer leases and measures the time from process start
// to the kernel holding every route, neighbour and fdb entry, next to
// `ip -batch` + `bridge -batch` for the same 15,000 entries in a fresh
// namespace in the same run. The end is the kernel's notification of the
// last entry (see coldStart). Where the time goes: when the agent logged
// its start, its lease and its files, when the first entry appeared, the
// agent's CPU time at the first and the last entry against the CPU time
// of ip and bridge, and how long one list of the 5,000 leases takes from
// etcd.
func BenchmarkAgentColdStart(b *testing.B) {
	b.Logf("load average before: %s", agentLoad())
	var total, floor, floorCPU, list, cpu, cpuFirst, first time.Duration
	milestones := map[string]time.Duration{}
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		al, _, closeLab := agentPeersLab(b)
		list += al.timeList()
		c0, err := agentChildrenCPU()
		if err != nil {
			b.Fatal(err)
		}
		fl := dpFloor(b)
		c1, err := agentChildrenCPU()
		if err != nil {
			b.Fatal(err)
		}
		floor, floorCPU = floor+fl, floorCPU+c1-c0
		b.StartTimer()
		cs := al.coldStart(al.lab.Hosts()[0], agentPeers)
		b.StopTimer()
		total += cs.Total
		cpu += cs.CPU
		cpuFirst += cs.CPUAtFirst
		for m, d := range cs.Milestones {
			milestones[m] += d
		}
		first += cs.FirstEntry
		st := al.backendStatus(al.lab.Hosts()[0])
		b.Logf("run %d: full passes %d once programmed; repairs %v", i+1, st.Passes, st.Repairs)
		b.Logf("run %d: cold start %v (polled: %v), agent CPU %v (%v at the first entry); ip/bridge -batch %v (CPU %v); milestones: %s, first entry %v",
			i+1, cs.Total.Round(time.Millisecond), cs.Polled, cs.CPU, cs.CPUAtFirst, fl.Round(time.Millisecond), (c1 - c0).Round(time.Millisecond),
			agentFormatMilestones(cs.Milestones), cs.FirstEntry.Round(time.Millisecond))
		closeLab()
	}
	b.Logf("load average after: %s", agentLoad())
	n := float64(b.N)
	b.ReportMetric(agentMS(total)/n, "ms/coldstart")
	b.ReportMetric(agentMS(floor)/n, "ms/ip-batch")
	b.ReportMetric(float64(total)/float64(floor), "ratio")
	b.ReportMetric(agentMS(cpu)/n, "ms-cpu/coldstart")
	b.ReportMetric(agentMS(cpuFirst)/n, "ms-cpu/to-first-entry")
	b.ReportMetric(agentMS(floorCPU)/n, "ms-cpu/ip-batch")
	b.ReportMetric(agentMS(list)/n, "ms/etcd-list")
	b.ReportMetric(agentMS(first)/n, "ms/to-first-entry")
	b.ReportMetric(agentMS(total-first)/n, "ms/first-to-last-entry")
	for _, m := range []struct{ msg, unit string }{
		{"starting netagent", "ms/to-start-log"},
		{"lease acquired", "ms/to-lease"},
		{"files written", "ms/to-files"},
	} {
		if d, ok := milestones[m.msg]; ok {
			b.ReportMetric(agentMS(d)/n, m.unit)
		}
	}
}

// BenchmarkAgentEventLatency: with the agent serving 5,000 peers, 50 new
// leases are written one at a time; each one's latency runs to the last
// of its three entries being notified by the kernel, from the Put's
// reply (and, as put-p50/p99, from the Put being issued, etcd's commit
// included).
func BenchmarkAgentEventLatency(b *testing.B) {
	const events = 50
	b.Logf("load average before: %s", agentLoad())
	var fromAck, fromPut []time.Duration
	var routes, early int
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		al, id, closeLab := agentPeersLab(b)
		h := al.lab.Hosts()[0]
		al.coldStart(h, agentPeers)
		_, nsh := al.handle(h.NS)
		stop := make(chan struct{})
		ks, err := agentWatchKernel(nsh, stop)
		if err != nil {
			close(stop)
			b.Fatal(err)
		}
		before := al.backendStatus(h)
		b.StartTimer()
		evs := al.leaseEvents(ks, id, agentPeers, events)
		b.StopTimer()
		n, e := ks.order.Routes()
		routes, early = routes+n, early+len(e)
		if err := ks.order.Err(); err != nil {
			b.Logf("run %d: route order watch: %v", i+1, err)
		}
		close(stop)
		after := al.backendStatus(h)
		b.Logf("run %d: full passes %d before the events, %d after; repairs %v", i+1, before.Passes, after.Passes, after.Repairs)
		run := make([]time.Duration, 0, len(evs))
		for _, e := range evs {
			run = append(run, e.FromAck)
		}
		slices.Sort(run)
		b.Logf("run %d: from the Put's reply: p50 %v, 5 slowest %v", i+1, agentPct(run, 50), run[max(len(run)-5, 0):])
		for _, e := range evs {
			fromAck = append(fromAck, e.FromAck)
			fromPut = append(fromPut, e.FromPut)
		}
		closeLab()
	}
	b.Logf("load average after: %s", agentLoad())
	agentReportLatencies(b, fromAck, fromPut, "put")
	// New peers whose route reached the kernel before their neighbour or
	// fdb entry (target 0), of the routes watched.
	b.ReportMetric(float64(early), "route-before-neigh")
	b.ReportMetric(float64(routes), "routes-watched")
}

// BenchmarkAgentIdle: the agent's peak RSS once it serves 5,000 peers
// (VmHWM, read after the idle window), and its CPU use while idle over
// agentIdleWindow after the cold start, in percent of one core.
func BenchmarkAgentIdle(b *testing.B) {
	b.Logf("load average before: %s", agentLoad())
	var hwm, rss int64
	var idle time.Duration
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		al, _, closeLab := agentPeersLab(b)
		cs := al.coldStart(al.lab.Hosts()[0], agentPeers)
		pid := cs.proc.PID()
		if comm, err := agentProcComm(pid); err != nil || comm != "netagent" {
			b.Fatalf("PID %d is %q (%v), not the agent", pid, comm, err)
		}
		cpu0, err := agentProcCPU(pid)
		if err != nil {
			b.Fatal(err)
		}
		t0 := time.Now()
		b.StartTimer()
		select {
		case <-cs.proc.Done():
			b.Fatalf("agent exited while idle:\n%s", cs.proc.Tail(2000))
		case <-time.After(agentIdleWindow):
		}
		b.StopTimer()
		cpu1, err := agentProcCPU(pid)
		if err != nil {
			b.Fatal(err)
		}
		window := time.Since(t0)
		idle += time.Duration(float64(cpu1-cpu0) * float64(agentIdleWindow) / float64(window))
		h, err := agentProcStatusKB(pid, "VmHWM")
		if err != nil {
			b.Fatal(err)
		}
		r, err := agentProcStatusKB(pid, "VmRSS")
		if err != nil {
			b.Fatal(err)
		}
		hwm, rss = hwm+h, rss+r
		b.Logf("run %d: VmHWM %d kB, VmRSS %d kB, CPU %v over %v idle (cold start CPU %v)",
			i+1, h, r, cpu1-cpu0, window.Round(time.Millisecond), cs.CPU)
		closeLab()
	}
	b.Logf("load average after: %s", agentLoad())
	n := float64(b.N)
	b.ReportMetric(float64(hwm)/1024/n, "MiB-peak-rss")
	b.ReportMetric(float64(rss)/1024/n, "MiB-rss")
	b.ReportMetric(100*idle.Seconds()/agentIdleWindow.Seconds()/n, "cpu%")
}

// BenchmarkAgentThroughput: one TCP stream (iperf3, 5 s) from a container
// on h1 to a container on h2, both attached through the CNI plugin, over
// each backend, next to the underlay between h1 and h2 in the same run.
func BenchmarkAgentThroughput(b *testing.B) {
	for _, backend := range []string{"vxlan", "host-gw"} {
		b.Run(backend, func(b *testing.B) {
			b.Logf("load average before: %s", agentLoad())
			var overlay, underlay float64
			for i := 0; i < b.N; i++ {
				b.StopTimer()
				al, closeLab := newAgentLab(b, 2, fmt.Sprintf(`{"Network":"10.5.0.0/16","Backend":{"Type":%q}}`, backend))
				h1, h2 := al.lab.Hosts()[0], al.lab.Hosts()[1]
				c1, c2, _, ip2 := al.twoContainers(al.startAgent)
				b.StartTimer()
				o := al.iperf(c2.NS, c1.NS, ip2)
				u := al.iperf(h2.NS, h1.NS, h2.Underlay.Addr())
				b.StopTimer()
				b.Logf("run %d: %s %.2f Gbit/s, underlay %.2f Gbit/s", i+1, backend, o, u)
				overlay, underlay = overlay+o, underlay+u
				closeLab()
			}
			b.Logf("load average after: %s", agentLoad())
			n := float64(b.N)
			b.ReportMetric(overlay/n, "Gbit/s")
			b.ReportMetric(underlay/n, "underlay-Gbit/s")
			b.ReportMetric(overlay/underlay, "ratio")
		})
	}
}

// agentReportLatencies reports the p50, p99 and maximum of fromAck (from
// a write's reply to the kernel) and the p50 and p99 of fromIssue (from
// the write being issued) as ms/<what>-p50 and -p99. It sorts both.
func agentReportLatencies(b *testing.B, fromAck, fromIssue []time.Duration, what string) {
	slices.Sort(fromAck)
	slices.Sort(fromIssue)
	b.ReportMetric(agentMS(agentPct(fromAck, 50)), "ms/p50")
	b.ReportMetric(agentMS(agentPct(fromAck, 99)), "ms/p99")
	b.ReportMetric(agentMS(fromAck[len(fromAck)-1]), "ms/max")
	b.ReportMetric(agentMS(agentPct(fromIssue, 50)), "ms/"+what+"-p50")
	b.ReportMetric(agentMS(agentPct(fromIssue, 99)), "ms/"+what+"-p99")
}

// timeList times one list of every lease, as the agent's lease watch does
// when it starts.
func (al *agentLab) timeList() time.Duration {
	al.b.Helper()
	ctx, cancel := context.WithTimeout(al.ctx, 30*time.Second)
	defer cancel()
	t0 := time.Now()
	resp, err := al.etcd.Get(ctx, agentPrefix+"/subnets/", clientv3.WithPrefix())
	d := time.Since(t0)
	if err != nil {
		al.b.Fatal(err)
	}
	if len(resp.Kvs) != agentPeers {
		al.b.Fatalf("etcd holds %d leases, want %d", len(resp.Kvs), agentPeers)
	}
	return d
}

func agentMS(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// pct returns the p-th percentile of sorted (nearest rank).
func agentPct(sorted []time.Duration, p int) time.Duration {
	i := (len(sorted)*p + 99) / 100
	return sorted[max(i-1, 0)]
}

// agentFormatMilestones lists milestones in the agent's order.
func agentFormatMilestones(m map[string]time.Duration) string {
	var parts []string
	for _, name := range agentMilestones {
		if d, ok := m[name]; ok {
			parts = append(parts, fmt.Sprintf("%q %v", name, d.Round(time.Millisecond)))
		}
	}
	return strings.Join(parts, ", ")
}
