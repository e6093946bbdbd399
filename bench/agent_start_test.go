package bench

import (
	"bufio"
	"fmt"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/netagent/netagent/internal/lab"
)

// agentStartPhases are the log lines a start is cut at: process start
// (exec, Go runtime, flags, instance lock) to "starting netagent"; the
// etcd connection and the config's Range to "network config"; the
// interface to "external interface"; the acquisition (Range of the
// leases, Grant, Txn, and any retry) to "lease acquired".
var agentStartPhases = []string{"starting netagent", "network config", "external interface", "lease acquired"}

// BenchmarkAgentStart/hosts=N: N `netagent run` processes (startAgent's
// flags) started at once, one per lab host, on an empty network
// (10.0.0.0/8, /24s): from just before the first is started to each
// process logging each of agentStartPhases, the agent's CPU time when its
// "lease acquired" was seen (polled every 20 ms: an upper bound), and the
// time until all N held a lease, and how many acquisitions backed off
// (agentAcquireRetry). Fails if two hosts hold the same subnet
// or an agent exits.
func BenchmarkAgentStart(b *testing.B) {
	for _, hosts := range []int{1, 10, 20, 50, 100} {
		b.Run(fmt.Sprintf("hosts=%d", hosts), func(b *testing.B) {
			b.Logf("load average before: %s", agentLoad())
			var all time.Duration
			phases := make([][]time.Duration, len(agentStartPhases))
			var cpus []time.Duration
			var retries int
			for i := 0; i < b.N; i++ {
				b.StopTimer()
				al, closeLab := newAgentLab(b, hosts, agentConfig)
				t0 := time.Now()
				procs := make([]*lab.Proc, hosts)
				for j, h := range al.lab.Hosts() {
					procs[j] = al.startAgent(h)
				}
				done := make([]bool, hosts)
				subnets := map[string]string{}
				left := hosts
				for left > 0 {
					if time.Since(t0) > agentColdStartTimeout {
						b.Fatalf("%d of %d agents without a lease after %v", left, hosts, agentColdStartTimeout)
					}
					time.Sleep(20 * time.Millisecond)
					for j, p := range procs {
						if done[j] {
							continue
						}
						select {
						case <-p.Done():
							b.Fatalf("agent %d exited:\n%s", j, p.Tail(2000))
						default:
						}
						ms, sn, r, err := agentStartLog(p.LogPath, t0)
						if err != nil {
							b.Fatal(err)
						}
						if _, ok := ms["lease acquired"]; !ok {
							continue
						}
						cpu, err := agentProcCPU(p.PID())
						if err != nil {
							b.Fatal(err)
						}
						done[j], left = true, left-1
						if other, dup := subnets[sn]; dup {
							b.Fatalf("subnet %s held by %s and host %d", sn, other, j)
						}
						subnets[sn] = fmt.Sprint(j)
						prev := time.Duration(0)
						for k, ph := range agentStartPhases {
							at, ok := ms[ph]
							if !ok {
								b.Fatalf("agent %d did not log %q", j, ph)
							}
							phases[k] = append(phases[k], at-prev)
							prev = at
						}
						cpus = append(cpus, cpu)
						retries += r
					}
				}
				total := time.Since(t0)
				all += total
				b.Logf("run %d: %d leases, all after %v (load %s)", i+1, hosts, total.Round(time.Millisecond), agentLoad())
				closeLab()
			}
			b.Logf("load average after: %s", agentLoad())
			for k, ph := range agentStartPhases {
				slices.Sort(phases[k])
				b.Logf("to %q: p50 %v, max %v", ph, phases[k][len(phases[k])/2], phases[k][len(phases[k])-1])
			}
			slices.Sort(cpus)
			b.Logf("CPU at lease: p50 %v, max %v; %d acquisitions backed off", cpus[len(cpus)/2], cpus[len(cpus)-1], retries)
			ms := func(d time.Duration) float64 { return float64(d) / 1e6 }
			b.ReportMetric(ms(all)/float64(b.N), "ms-all-leases")
			b.ReportMetric(ms(phases[0][len(phases[0])/2]), "ms-p50-proc-start")
			b.ReportMetric(ms(phases[1][len(phases[1])/2]), "ms-p50-etcd-config")
			b.ReportMetric(ms(phases[3][len(phases[3])/2]), "ms-p50-acquire")
			b.ReportMetric(ms(cpus[len(cpus)/2]), "ms-p50-cpu-at-lease")
			b.ReportMetric(float64(retries)/float64(b.N), "backoffs")
		})
	}
}

// agentAcquireRetry is logged when an acquisition failed (after
// subnet's conflictRetries lost races, or an etcd error) and waits out a
// backoff of 1 s or more.
const agentAcquireRetry = "cannot acquire a subnet lease: retrying"

// agentStartLog reads the agent's log at path: when (from t0) each of
// agentStartPhases was first logged, the subnet of "lease acquired", and
// how many times agentAcquireRetry was logged.
func agentStartLog(path string, t0 time.Time) (map[string]time.Duration, string, int, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, "", 0, err
	}
	defer f.Close()
	out := map[string]time.Duration{}
	var subnet string
	var retries int
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		at, msg, ok := agentParseLogLine(sc.Text())
		if ok && msg == agentAcquireRetry {
			retries++
		}
		if !ok || !slices.Contains(agentStartPhases, msg) {
			continue
		}
		if _, seen := out[msg]; !seen {
			out[msg] = at.Sub(t0)
		}
		if msg == "lease acquired" {
			for _, f := range strings.Fields(sc.Text()) {
				if v, ok := strings.CutPrefix(f, "subnet="); ok {
					subnet = v
				}
			}
		}
	}
	return out, subnet, retries, sc.Err()
}
