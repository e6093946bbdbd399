package bench

import (
	"bufio"
	"cmp"
	"context"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
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

// agentStartBuild is how BenchmarkAgentStart builds netagent: the go
// command's environment and flags.
type agentStartBuild struct {
	env, flags []string
}

// agentStartBuilds are the builds NETAGENT_BENCH_START_BUILD chooses from:
// "package" (the default) as scripts/package.sh builds the binary a host
// runs (no cgo, no gRPC tracing, no Kubernetes store, position-independent,
// stripped);
// "static", the same without PIE (no dynamic loader, no relocations at
// start); "trace", the package's build with gRPC's tracing (and its
// html/template) linked in, as before; "go-build", a plain `go build`
// (cgo's resolver, dynamically linked: the other benchmarks' binary).
var agentStartBuilds = map[string]agentStartBuild{
	"package":  {[]string{"CGO_ENABLED=0"}, []string{"-tags=grpcnotrace,netagent_nokube", "-trimpath", "-buildmode=pie", "-ldflags=-s -w"}},
	"static":   {[]string{"CGO_ENABLED=0"}, []string{"-tags=grpcnotrace,netagent_nokube", "-trimpath", "-ldflags=-s -w"}},
	"trace":    {[]string{"CGO_ENABLED=0"}, []string{"-trimpath", "-buildmode=pie", "-ldflags=-s -w"}},
	"go-build": {nil, nil},
}

// agentStartBinary builds netagent as NETAGENT_BENCH_START_BUILD says, in
// the benchmarks' binary directory, once per build.
func agentStartBinary(b *testing.B) (name, path string) {
	b.Helper()
	name = cmp.Or(os.Getenv("NETAGENT_BENCH_START_BUILD"), "package")
	build, ok := agentStartBuilds[name]
	if !ok {
		b.Fatalf("NETAGENT_BENCH_START_BUILD=%s: not one of %v", name, slices.Sorted(maps.Keys(agentStartBuilds)))
	}
	path = filepath.Join(agentBin.dir, "netagent-"+name)
	if _, err := os.Stat(path); err == nil {
		return name, path
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "go", append(append([]string{"build", "-o", path}, build.flags...), "./cmd/netagent")...)
	cmd.Dir = ".." // the module root, from the bench package
	cmd.Env = append(os.Environ(), build.env...)
	if out, err := cmd.CombinedOutput(); err != nil {
		b.Fatalf("build netagent (%s): %v\n%s", name, err, out)
	}
	return name, path
}

// agentStartEnter is how BenchmarkAgentStart starts each agent in its
// host's namespace (NETAGENT_BENCH_START_ENTER): "setns" (the default)
// forks it from a thread in the namespace (lab.StartProcessInNet), which
// costs what a host's agent pays: nothing; "ip" runs `ip netns exec`,
// which execs ip first and remounts /sys in a new mount namespace.
func agentStartEnter(b *testing.B, al *agentLab) (string, func(ns string, env []string, argv ...string) (*lab.Proc, error)) {
	switch e := cmp.Or(os.Getenv("NETAGENT_BENCH_START_ENTER"), "setns"); e {
	case "setns":
		return e, al.lab.StartProcessInNet
	case "ip":
		return e, al.lab.StartProcess
	default:
		b.Fatalf("NETAGENT_BENCH_START_ENTER=%s: not setns or ip", e)
		return "", nil
	}
}

// BenchmarkAgentStart/hosts=N: N `netagent run` processes (startAgent's
// flags and those of NETAGENT_BENCH_START_FLAGS, e.g. "--probe=false";
// the binary and the way into the namespace as agentStartBinary and
// agentStartEnter say) started at once, one per lab host, on an
// empty network (10.0.0.0/8, /24s): from just before the first is
// started to each process logging each of agentStartPhases, the agent's
// CPU time when its "lease acquired" was seen (polled every 20 ms: an
// upper bound), and the time until all N held a lease, and how many
// acquisitions backed off (agentAcquireRetry); and where the machine's
// CPU time went meanwhile (agentCPUShares). Fails if two hosts hold the
// same subnet or an agent exits.
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
				build, bin := agentStartBinary(b)
				enter, start := agentStartEnter(b, al)
				if i == 0 {
					b.Logf("netagent built as %q, started by %q, extra flags %q", build, enter, os.Getenv("NETAGENT_BENCH_START_FLAGS"))
				}
				cpu0, err := agentCPUSnapshot(al, nil)
				if err != nil {
					b.Fatal(err)
				}
				t0 := time.Now()
				procs := make([]*lab.Proc, hosts)
				for j, h := range al.lab.Hosts() {
					procs[j] = al.startAgentAs(h, bin, start, nil, strings.Fields(os.Getenv("NETAGENT_BENCH_START_FLAGS"))...)
				}
				done := make([]bool, hosts)
				subnets := map[string]string{}
				left := hosts
				for left > 0 {
					if time.Since(t0) > agentColdStartTimeout {
						if c, err := agentCPUSnapshot(al, procs); err == nil {
							b.Log(agentCPUShares(cpu0, c, time.Since(t0), hosts))
						}
						for j, p := range procs {
							if !done[j] {
								b.Logf("agent %d, without a lease:\n%s", j, p.Tail(800))
							}
						}
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
				cpu1, err := agentCPUSnapshot(al, procs)
				if err != nil {
					b.Fatal(err)
				}
				all += total
				b.Logf("run %d: %d leases, all after %v (load %s)", i+1, hosts, total.Round(time.Millisecond), agentLoad())
				b.Logf("run %d: %s", i+1, agentCPUShares(cpu0, cpu1, total, hosts))
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

// BenchmarkAgentStartCPU: where an agent's CPU goes from the end of its
// package initialisation to its lease, on an empty network. Each
// iteration starts the agent (agent.New(...).Run in this test binary,
// re-executed in a lab host's namespace, as BenchmarkAgentMemory does)
// with a 1 kHz CPU profile, one after another on the hosts of one lab,
// and stops the profile when the agent logs "lease acquired"; the
// profiles are kept in NETAGENT_BENCH_MEM_KEEP/start-cpu (merge them with
// `go tool pprof -top DIR/*/cpu.pprof`). Reported: the agent's whole CPU
// at its lease (the profile shows the part after package init), and,
// run in the same namespace just before it, the CPU of `ip netns exec NS
// /bin/true` and of `ip netns exec NS netagent version` (Go runtime,
// package init, exit).
func BenchmarkAgentStartCPU(b *testing.B) {
	const hosts = 10
	b.Logf("load average before: %s", agentLoad())
	keep := os.Getenv("NETAGENT_BENCH_MEM_KEEP")
	if keep == "" {
		keep = b.TempDir()
	}
	exe, err := os.Executable()
	if err != nil {
		b.Fatal(err)
	}
	var total time.Duration
	var execCPU [2]time.Duration
	n := 0
	for n < b.N {
		al, closeLab := newAgentLab(b, hosts, agentConfig)
		for _, h := range al.lab.Hosts() {
			if n == b.N {
				break
			}
			n++
			// What exec costs before the agent's code: `ip netns exec`
			// alone, and with netagent's Go runtime and package init.
			for k, argv := range [][]string{{"/bin/true"}, {al.bins["./cmd/netagent"], "version"}} {
				c0, err := agentChildrenCPU()
				if err != nil {
					b.Fatal(err)
				}
				p, err := al.lab.StartProcess(h.NS, nil, argv...)
				if err != nil {
					b.Fatal(err)
				}
				if err := p.Wait(al.ctx); err != nil {
					b.Fatalf("%v: %v", argv, err)
				}
				c1, err := agentChildrenCPU()
				if err != nil {
					b.Fatal(err)
				}
				execCPU[k] += c1 - c0
			}
			dir := filepath.Join(keep, "start-cpu", fmt.Sprint(n))
			if err := os.MkdirAll(dir, 0o755); err != nil {
				b.Fatal(err)
			}
			t0 := time.Now()
			p, err := al.lab.StartProcess(h.NS, []string{agentMemEnv + "=" + dir, agentCPUEnv + "=1"}, exe,
				strings.Join(al.lab.EtcdEndpoints(), ","), h.SubnetFile(),
				filepath.Join(h.Dir, "docker"), agentStatusSocket(h))
			if err != nil {
				b.Fatal(err)
			}
			for {
				select {
				case <-p.Done():
					b.Fatalf("agent exited:\n%s", p.Tail(2000))
				case <-time.After(5 * time.Millisecond):
				}
				if time.Since(t0) > agentColdStartTimeout {
					b.Fatalf("no lease after %v:\n%s", agentColdStartTimeout, p.Tail(2000))
				}
				ms, _, _, err := agentStartLog(p.LogPath, t0)
				if err != nil {
					b.Fatal(err)
				}
				if _, ok := ms["lease acquired"]; ok {
					break
				}
			}
			if err := p.Signal(syscall.SIGUSR1); err != nil {
				b.Fatal(err)
			}
			cpu, err := agentProcCPU(p.PID())
			if err != nil {
				b.Fatal(err)
			}
			total += cpu
			for {
				if _, err := os.Stat(filepath.Join(dir, "done-cpu")); err == nil {
					break
				}
				select {
				case <-p.Done():
					b.Fatalf("agent exited before its profile:\n%s", p.Tail(2000))
				case <-time.After(10 * time.Millisecond):
				}
			}
			if err := p.Stop(5 * time.Second); err != nil {
				b.Logf("stop agent %d: %v", n, err)
			}
		}
		closeLab()
	}
	b.Logf("profiles in %s; load average after: %s", filepath.Join(keep, "start-cpu"), agentLoad())
	b.ReportMetric(float64(total)/1e6/float64(b.N), "ms-cpu-at-lease")
	b.ReportMetric(float64(execCPU[0])/1e6/float64(b.N), "ms-cpu-netns-exec-true")
	b.ReportMetric(float64(execCPU[1])/1e6/float64(b.N), "ms-cpu-netns-exec-version")
}
