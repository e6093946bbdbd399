package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"runtime/pprof"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/netagent/netagent/agent"
	"github.com/netagent/netagent/backend"
	"github.com/netagent/netagent/backend/hostgw"
	"github.com/netagent/netagent/backend/vxlan"
)

// agentMemEnv, set to a directory in the environment of this test binary,
// makes it run an agent instead of the tests (see agentMemChild): the
// memory benchmark starts it in a lab namespace so that the agent's own
// heap can be profiled, which the agent's binary offers no way to do.
const agentMemEnv = "NETAGENT_BENCH_MEM_DIR"

// agentMemProfileRate is the child's runtime.MemProfileRate.
const agentMemProfileRate = 4096

// agentCPUEnv, set to 1 with agentMemEnv, makes the child profile its CPU
// at 1 kHz from this package's init (every package it imports has been
// initialised) to the first SIGUSR1, and write the profile to cpu.pprof
// in agentMemEnv's directory, then done-cpu, instead of snapshot 1.
const agentCPUEnv = "NETAGENT_BENCH_CPU"

// agentCPU is the child's CPU profile file while it runs.
var agentCPU *os.File

func init() {
	if dir := os.Getenv(agentMemEnv); dir != "" {
		if os.Getenv(agentCPUEnv) == "1" {
			// Set before StartCPUProfile, which then keeps this rate
			// (and prints that it cannot change it).
			runtime.SetCPUProfileRate(1000)
			f, err := os.Create(filepath.Join(dir, "cpu.pprof"))
			if err == nil {
				err = pprof.StartCPUProfile(f)
			}
			if err != nil {
				fmt.Fprintf(os.Stderr, "cpu profile: %v\n", err)
				os.Exit(2)
			}
			agentCPU = f
		} else {
			// Every 4 kB allocated is sampled instead of every 512 kB:
			// the profile of a 20 MB heap is otherwise a few dozen
			// samples. (Not when profiling the CPU, which it would
			// inflate.)
			runtime.MemProfileRate = agentMemProfileRate
		}
		os.Exit(agentMemChild(dir, os.Args[1:]))
	}
}

// agentMemSnapshot is what the child writes on each SIGUSR1.
type agentMemSnapshot struct {
	// Before is the runtime's memory statistics as the signal found them,
	// AfterGC after a forced collection, AfterFree after
	// debug.FreeOSMemory.
	Before, AfterGC, AfterFree agentMemStats
	// RSS* are VmRSS (kB) at the same three points, RssAnon and RssFile
	// as the signal found them.
	RSSBefore, RSSAfterGC, RSSAfterFree, RssAnon, RssFile, HWM int64
}

// agentMemStats is the part of runtime.MemStats the breakdown uses.
type agentMemStats struct {
	HeapAlloc, HeapInuse, HeapIdle, HeapReleased, StackInuse, Sys,
	MSpanInuse, MCacheInuse, GCSys, OtherSys, BuckHashSys, NextGC uint64
	NumGC      uint32
	Goroutines int
}

func readAgentMemStats() agentMemStats {
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return agentMemStats{
		HeapAlloc: m.HeapAlloc, HeapInuse: m.HeapInuse, HeapIdle: m.HeapIdle,
		HeapReleased: m.HeapReleased, StackInuse: m.StackInuse, Sys: m.Sys,
		MSpanInuse: m.MSpanInuse, MCacheInuse: m.MCacheInuse, GCSys: m.GCSys,
		OtherSys: m.OtherSys, BuckHashSys: m.BuckHashSys, NextGC: m.NextGC,
		NumGC: m.NumGC, Goroutines: runtime.NumGoroutine(),
	}
}

// agentMemChild runs an agent with the options `netagent run` gets from
// startAgent's flags (args: etcd endpoints, subnet file, docker options
// file, status socket), and on each SIGUSR1 writes into dir a snapshot
// (snap-N.json) and a heap profile taken after a forced collection
// (heap-N.pprof), then done-N. It returns the exit code.
func agentMemChild(dir string, args []string) int {
	if len(args) != 4 {
		fmt.Fprintf(os.Stderr, "%s: want 4 arguments, got %q\n", agentMemEnv, args)
		return 2
	}
	opts := agent.DefaultOptions()
	opts.Etcd.Endpoints = strings.Split(args[0], ",")
	opts.SubnetFile, opts.DockerOptsFile, opts.StatusSocket = args[1], args[2], args[3]
	opts.IPMasq = true
	opts.Version = "bench"
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	kinds := backend.Kinds{
		{Type: vxlan.Type, Validate: vxlan.Validate, New: backend.Construct(vxlan.New)},
		{Type: hostgw.Type, New: backend.Construct(hostgw.New)},
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	usr := make(chan os.Signal, 1)
	signal.Notify(usr, syscall.SIGUSR1)
	go func() {
		if agentCPU != nil {
			<-usr
			pprof.StopCPUProfile()
			if err := agentCPU.Close(); err != nil {
				fmt.Fprintf(os.Stderr, "cpu profile: %v\n", err)
			}
			os.WriteFile(filepath.Join(dir, "done-cpu"), nil, 0o644)
		}
		for n := 1; ; n++ {
			<-usr
			if err := agentMemWrite(dir, n); err != nil {
				fmt.Fprintf(os.Stderr, "memory snapshot %d: %v\n", n, err)
			}
		}
	}()
	if err := agent.New(opts, log, kinds).Run(ctx); err != nil && ctx.Err() == nil {
		fmt.Fprintf(os.Stderr, "agent: %v\n", err)
		return 1
	}
	return 0
}

// agentMemWrite writes snapshot n into dir.
func agentMemWrite(dir string, n int) error {
	self := os.Getpid()
	var s agentMemSnapshot
	var err error
	s.Before = readAgentMemStats()
	if s.RSSBefore, err = agentProcStatusKB(self, "VmRSS"); err != nil {
		return err
	}
	if s.RssAnon, err = agentProcStatusKB(self, "RssAnon"); err != nil {
		return err
	}
	if s.RssFile, err = agentProcStatusKB(self, "RssFile"); err != nil {
		return err
	}
	if s.HWM, err = agentProcStatusKB(self, "VmHWM"); err != nil {
		return err
	}
	runtime.GC()
	s.AfterGC = readAgentMemStats()
	if s.RSSAfterGC, err = agentProcStatusKB(self, "VmRSS"); err != nil {
		return err
	}
	f, err := os.Create(filepath.Join(dir, fmt.Sprintf("heap-%d.pprof", n)))
	if err != nil {
		return err
	}
	if err := pprof.WriteHeapProfile(f); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	debug.FreeOSMemory()
	s.AfterFree = readAgentMemStats()
	if s.RSSAfterFree, err = agentProcStatusKB(self, "VmRSS"); err != nil {
		return err
	}
	b, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("snap-%d.json", n)), b, 0o644); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, fmt.Sprintf("done-%d", n)), nil, 0o644)
}

// BenchmarkAgentMemory: where the RSS of an agent serving 5,000 peers
// goes. The agent (agent.New(...).Run with startAgent's options, in this
// test binary re-executed in the lab host's namespace) cold-starts against
// the 5,000 leases of BenchmarkAgentColdStart; once the kernel holds every
// entry, and again after agentIdleWindow (one resync pass), it is asked
// for a snapshot: VmRSS, VmHWM, RssAnon, RssFile and the runtime's
// statistics as found, after a forced collection and after
// debug.FreeOSMemory, and a heap profile; the agent runs with
// GODEBUG=gctrace=1, so its log shows the heap at each collection of the
// cold start (kept in -memdir, default a
// temporary directory, for `go tool pprof -sample_index=inuse_space`).
// RssFile is the test binary's, larger than netagent's: compare RssAnon.
func BenchmarkAgentMemory(b *testing.B) {
	b.Logf("load average before: %s", agentLoad())
	keep := os.Getenv("NETAGENT_BENCH_MEM_KEEP")
	var cold, idle agentMemSnapshot
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		al, _, closeLab := agentPeersLab(b)
		h := al.lab.Hosts()[0]
		dir := keep
		if dir == "" {
			dir = b.TempDir()
		} else {
			dir = filepath.Join(keep, fmt.Sprint(i+1))
			if err := os.MkdirAll(dir, 0o755); err != nil {
				b.Fatal(err)
			}
		}
		exe, err := os.Executable()
		if err != nil {
			b.Fatal(err)
		}
		nh, _ := al.handle(h.NS)
		t0 := time.Now()
		p, err := al.lab.StartProcess(h.NS, []string{agentMemEnv + "=" + dir, "GODEBUG=gctrace=1"}, exe,
			strings.Join(al.lab.EtcdEndpoints(), ","), h.SubnetFile(),
			filepath.Join(h.Dir, "docker"), agentStatusSocket(h))
		if err != nil {
			b.Fatal(err)
		}
		al.agents[h.Name] = p
		for {
			select {
			case <-p.Done():
				b.Fatalf("agent exited during the cold start:\n%s", p.Tail(2000))
			case <-time.After(50 * time.Millisecond):
			}
			if time.Since(t0) > agentColdStartTimeout {
				b.Fatalf("cold start not done after %v:\n%s", agentColdStartTimeout, p.Tail(2000))
			}
			_, _, _, complete, err := agentKernel(nh, agentPeers)
			if err != nil {
				b.Fatal(err)
			}
			if complete {
				break
			}
		}
		b.Logf("run %d: kernel complete after %v (load %s)", i+1, time.Since(t0).Round(time.Millisecond), agentLoad())
		c := agentMemSnap(b, p, dir, 1)
		b.StartTimer()
		select {
		case <-p.Done():
			b.Fatalf("agent exited while idle:\n%s", p.Tail(2000))
		case <-time.After(agentIdleWindow):
		}
		b.StopTimer()
		d := agentMemSnap(b, p, dir, 2)
		agentMemLog(b, fmt.Sprintf("run %d cold", i+1), c)
		agentMemLog(b, fmt.Sprintf("run %d idle", i+1), d)
		if log, err := os.ReadFile(p.LogPath); err == nil {
			os.WriteFile(filepath.Join(dir, "agent.log"), log, 0o644)
		}
		b.Logf("run %d: profiles and log (with gctrace) in %s (load %s)", i+1, dir, agentLoad())
		cold, idle = agentMemAdd(cold, c), agentMemAdd(idle, d)
		closeLab()
	}
	b.Logf("load average after: %s", agentLoad())
	n := float64(b.N)
	mib := func(kb int64) float64 { return float64(kb) / 1024 / n }
	mb := func(v uint64) float64 { return float64(v) / (1 << 20) / n }
	b.ReportMetric(mib(cold.RSSBefore), "MiB-rss-cold")
	b.ReportMetric(mib(cold.RssAnon), "MiB-anon-cold")
	b.ReportMetric(mib(cold.RSSAfterFree), "MiB-rss-cold-freed")
	b.ReportMetric(mb(cold.AfterGC.HeapAlloc), "MiB-live-cold")
	b.ReportMetric(mib(idle.HWM), "MiB-peak-rss")
	b.ReportMetric(mib(idle.RSSBefore), "MiB-rss-idle")
	b.ReportMetric(mb(idle.AfterGC.HeapAlloc), "MiB-live-idle")
}

// agentMemSnap asks the child p for snapshot n and reads it.
func agentMemSnap(b *testing.B, p interface {
	Signal(os.Signal) error
	Done() <-chan struct{}
	Tail(int) string
}, dir string, n int) agentMemSnapshot {
	b.Helper()
	if err := p.Signal(syscall.SIGUSR1); err != nil {
		b.Fatal(err)
	}
	deadline := time.Now().Add(time.Minute)
	for {
		if _, err := os.Stat(filepath.Join(dir, fmt.Sprintf("done-%d", n))); err == nil {
			break
		}
		select {
		case <-p.Done():
			b.Fatalf("agent exited before snapshot %d:\n%s", n, p.Tail(2000))
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			b.Fatalf("no snapshot %d after a minute:\n%s", n, p.Tail(2000))
		}
	}
	raw, err := os.ReadFile(filepath.Join(dir, fmt.Sprintf("snap-%d.json", n)))
	if err != nil {
		b.Fatal(err)
	}
	var s agentMemSnapshot
	if err := json.Unmarshal(raw, &s); err != nil {
		b.Fatal(err)
	}
	return s
}

func agentMemLog(b *testing.B, what string, s agentMemSnapshot) {
	b.Helper()
	m := func(v uint64) string { return fmt.Sprintf("%.1f", float64(v)/(1<<20)) }
	k := func(v int64) string { return fmt.Sprintf("%.1f", float64(v)/1024) }
	b.Logf("%s: VmRSS %s MiB (anon %s, file %s), VmHWM %s; after GC %s, after FreeOSMemory %s", what,
		k(s.RSSBefore), k(s.RssAnon), k(s.RssFile), k(s.HWM), k(s.RSSAfterGC), k(s.RSSAfterFree))
	for _, x := range []struct {
		at string
		st agentMemStats
	}{{"found", s.Before}, {"after GC", s.AfterGC}, {"after free", s.AfterFree}} {
		st := x.st
		b.Logf("  %s: heap alloc %s, inuse %s, idle %s (released %s), stacks %s, spans %s, GC meta %s, other %s, Sys %s MiB; next GC %s; %d GCs, %d goroutines",
			x.at, m(st.HeapAlloc), m(st.HeapInuse), m(st.HeapIdle), m(st.HeapReleased), m(st.StackInuse),
			m(st.MSpanInuse), m(st.GCSys), m(st.OtherSys), m(st.Sys), m(st.NextGC), st.NumGC, st.Goroutines)
	}
}

// agentMemAdd sums the figures ReportMetric averages.
func agentMemAdd(a, s agentMemSnapshot) agentMemSnapshot {
	a.RSSBefore += s.RSSBefore
	a.RssAnon += s.RssAnon
	a.RSSAfterFree += s.RSSAfterFree
	a.HWM += s.HWM
	a.AfterGC.HeapAlloc += s.AfterGC.HeapAlloc
	return a
}

// BenchmarkAgentMemoryBinary: the same figures for the real `netagent
// run` (startAgent's flags, GODEBUG=gctrace=1 in its environment), which
// cannot be profiled: VmRSS, RssAnon, RssFile once the kernel holds every
// entry and after agentIdleWindow, VmHWM after it, and from the gctrace
// lines the largest heap the runtime reached (MB, the middle of "A->B->C
// MB"), the live heap after the last collection and the number of
// collections; and the agent's CPU time (user+system) at the end of the
// cold start and over the idle window, which a memory limit
// (--memory-limit) raises when it makes the collector run more often.
func BenchmarkAgentMemoryBinary(b *testing.B) {
	b.Logf("load average before: %s", agentLoad())
	var rssCold, anonCold, fileCold, rssIdle, anonIdle, hwm int64
	var peakHeap, live float64
	var cpuCold, cpuIdle time.Duration
	var gcsTotal int
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		al, _, closeLab := agentPeersLab(b)
		old, had := os.LookupEnv("GODEBUG")
		os.Setenv("GODEBUG", "gctrace=1")
		cs := al.coldStart(al.lab.Hosts()[0], agentPeers)
		if had {
			os.Setenv("GODEBUG", old)
		} else {
			os.Unsetenv("GODEBUG")
		}
		pid := cs.proc.PID()
		if comm, err := agentProcComm(pid); err != nil || comm != "netagent" {
			b.Fatalf("PID %d is %q (%v), not the agent", pid, comm, err)
		}
		kb := func(field string) int64 {
			v, err := agentProcStatusKB(pid, field)
			if err != nil {
				b.Fatal(err)
			}
			return v
		}
		rc, ac, fc := kb("VmRSS"), kb("RssAnon"), kb("RssFile")
		cpu0, err := agentProcCPU(pid)
		if err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		select {
		case <-cs.proc.Done():
			b.Fatalf("agent exited while idle:\n%s", cs.proc.Tail(2000))
		case <-time.After(agentIdleWindow):
		}
		b.StopTimer()
		ri, ai, h := kb("VmRSS"), kb("RssAnon"), kb("VmHWM")
		cpu1, err := agentProcCPU(pid)
		if err != nil {
			b.Fatal(err)
		}
		log, err := os.ReadFile(cs.proc.LogPath)
		if err != nil {
			b.Fatal(err)
		}
		if keep := os.Getenv("NETAGENT_BENCH_MEM_KEEP"); keep != "" {
			os.WriteFile(filepath.Join(keep, fmt.Sprintf("netagent-%d.log", i+1)), log, 0o644)
		}
		pk, lv, gcs := agentGCTrace(string(log))
		if gcs == 0 {
			b.Fatalf("no gctrace line in the agent's log")
		}
		b.Logf("run %d: cold VmRSS %.1f MiB (anon %.1f, file %.1f); idle VmRSS %.1f MiB (anon %.1f), VmHWM %.1f MiB; %d GCs, largest heap %.0f MB, live %.0f MB; CPU %v cold, %v idle (load %s)",
			i+1, float64(rc)/1024, float64(ac)/1024, float64(fc)/1024, float64(ri)/1024, float64(ai)/1024, float64(h)/1024, gcs, pk, lv, cpu0, cpu1-cpu0, agentLoad())
		cpuCold, cpuIdle, gcsTotal = cpuCold+cpu0, cpuIdle+cpu1-cpu0, gcsTotal+gcs
		rssCold, anonCold, fileCold, rssIdle, anonIdle, hwm = rssCold+rc, anonCold+ac, fileCold+fc, rssIdle+ri, anonIdle+ai, hwm+h
		peakHeap, live = peakHeap+pk, live+lv
		closeLab()
	}
	b.Logf("load average after: %s", agentLoad())
	n := float64(b.N)
	mib := func(kb int64) float64 { return float64(kb) / 1024 / n }
	b.ReportMetric(mib(rssCold), "MiB-rss-cold")
	b.ReportMetric(mib(anonCold), "MiB-anon-cold")
	b.ReportMetric(mib(fileCold), "MiB-file-cold")
	b.ReportMetric(mib(rssIdle), "MiB-rss-idle")
	b.ReportMetric(mib(anonIdle), "MiB-anon-idle")
	b.ReportMetric(mib(hwm), "MiB-peak-rss")
	b.ReportMetric(peakHeap/n, "MB-peak-heap")
	b.ReportMetric(live/n, "MB-live-heap")
	b.ReportMetric(float64(gcsTotal)/n, "GCs")
	b.ReportMetric(agentMS(cpuCold)/n, "ms-cpu/coldstart")
	b.ReportMetric(agentMS(cpuIdle)/n, "ms-cpu/idle")
}

// agentGCTrace reads the runtime's gctrace lines in log: the largest heap
// at the end of a collection's mark ("A->B->C MB": B), the live heap after
// the last one (C) and the number of collections.
func agentGCTrace(log string) (peak, live float64, n int) {
	for _, line := range strings.Split(log, "\n") {
		if !strings.HasPrefix(line, "gc ") {
			continue
		}
		i := strings.Index(line, " MB,")
		if i < 0 {
			continue
		}
		f := strings.Fields(line[:i])
		parts := strings.Split(f[len(f)-1], "->")
		if len(parts) != 3 {
			continue
		}
		var v [3]float64
		ok := true
		for j, p := range parts {
			if _, err := fmt.Sscan(p, &v[j]); err != nil {
				ok = false
			}
		}
		if !ok {
			continue
		}
		peak, live, n = max(peak, v[1]), v[2], n+1
	}
	return peak, live, n
}
