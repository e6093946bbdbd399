// Command netagent-scale runs the scale scenarios of package
// internal/scalesim and prints a table: for each N, N simulated hosts
// (the agent's own lease holder and lease watch, each with its own etcd
// client) against a 3-member etcd cluster in network namespaces. It must
// run as root; it removes its namespaces and processes when it ends.
//
// Usage:
//
//	netagent-scale [-n 500,1000] [-watchers W] [-ttl 24h] [-renew-margin 1h]
//	               [-etcd-dial-timeout 20s] [-etcd-keepalive-timeout 20s]
//	               [-steady 30s] [-cut 20s] [-lab-binary PATH]
//
// Scenarios, in order, for each N: boot (all N acquire at once), steady
// (requests and bytes over a window, etcd CPU and RSS), propagation (one
// new lease until every watch has it), leader (the etcd leader killed),
// cutoff (a third of the hosts cut off while leases change and etcd
// compacts), restart (every member killed and started again).
package main

import (
	"cmp"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/netagent/netagent/agent"
	"github.com/netagent/netagent/internal/lab"
	"github.com/netagent/netagent/internal/scalesim"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout)
	stop()
	if err != nil && !errors.Is(err, flag.ErrHelp) {
		fmt.Fprintf(os.Stderr, "netagent-scale: %v\n", err)
		os.Exit(1)
	}
}

type options struct {
	ns          []int
	watchers    int
	ttl, margin time.Duration
	connect     time.Duration
	keepalive   time.Duration
	steady, cut time.Duration
	labBinary   string
	verbose     bool
	skip        map[string]bool
}

func run(ctx context.Context, args []string, out io.Writer) error {
	fs := flag.NewFlagSet("netagent-scale", flag.ContinueOnError)
	var o options
	var ns, skip string
	fs.StringVar(&ns, "n", "500,1000", "comma-separated numbers of simulated hosts, one run each")
	fs.IntVar(&o.watchers, "watchers", 0, "hosts that also run the lease watch (0: all)")
	fs.DurationVar(&o.ttl, "ttl", 0, "lease TTL (0: the agent's default)")
	fs.DurationVar(&o.margin, "renew-margin", 0, "renew margin (0: the agent's default)")
	fs.DurationVar(&o.connect, "etcd-dial-timeout", 0, "the hosts' netagent run --etcd-dial-timeout (0: the agent's default)")
	fs.DurationVar(&o.keepalive, "etcd-keepalive-timeout", 0, "the hosts' netagent run --etcd-keepalive-timeout (0: the agent's default)")
	fs.DurationVar(&o.steady, "steady", 30*time.Second, "steady-state measuring window")
	fs.DurationVar(&o.cut, "cut", 20*time.Second, "how long a third of the hosts stay cut off")
	fs.StringVar(&o.labBinary, "lab-binary", "", "netagent-lab executable (built when empty)")
	fs.BoolVar(&o.verbose, "v", false, "log progress and the hosts' warnings to stderr")
	fs.StringVar(&skip, "skip", "", "comma-separated scenarios to skip (leader,cutoff,restart)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	for _, f := range strings.Split(ns, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 {
			return fmt.Errorf("-n: %q is not a number of hosts", f)
		}
		o.ns = append(o.ns, n)
	}
	o.skip = map[string]bool{}
	for _, f := range strings.Split(skip, ",") {
		o.skip[strings.TrimSpace(f)] = true
	}
	if os.Geteuid() != 0 {
		return lab.ErrNotRoot
	}
	if o.labBinary == "" {
		dir, err := os.MkdirTemp("", "netagent-scale-bin-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(dir)
		bins, err := lab.BuildBinaries(ctx, dir, "./cmd/netagent-lab")
		if err != nil {
			return err
		}
		o.labBinary = bins["./cmd/netagent-lab"]
	}
	var rows []string
	for _, n := range o.ns {
		row, err := runN(ctx, o, n, out)
		if err != nil {
			return fmt.Errorf("N=%d: %w", n, err)
		}
		rows = append(rows, row...)
	}
	fmt.Fprintln(out)
	fmt.Fprintln(out, "| N | scenario | result | load |")
	fmt.Fprintln(out, "|---|---|---|---|")
	for _, r := range rows {
		fmt.Fprintln(out, r)
	}
	return nil
}

// orphanLeases counts the etcd leases that hold no lease key: granted by
// attempts that failed and left to expire.
func orphanLeases(ctx context.Context, admin *clientv3.Client) (string, error) {
	ls, err := admin.Leases(ctx)
	if err != nil {
		return "", fmt.Errorf("list etcd leases: %w", err)
	}
	// Not keys only: that leaves out the etcd lease of each key.
	keys, err := admin.Get(ctx, scalesim.Prefix+"/subnets/", clientv3.WithPrefix())
	if err != nil {
		return "", fmt.Errorf("list lease keys: %w", err)
	}
	onLease := map[int64]bool{}
	for _, kv := range keys.Kvs {
		onLease[kv.Lease] = true
	}
	orphans := 0
	for _, l := range ls.Leases {
		if !onLease[int64(l.ID)] {
			orphans++
		}
	}
	return fmt.Sprintf("%d lease keys, %d etcd leases, %d of them holding no key", len(keys.Kvs), len(ls.Leases), orphans), nil
}

// load is the first field of /proc/loadavg.
func load() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	return strings.Fields(string(b))[0]
}

func mb(b float64) string { return fmt.Sprintf("%.1f MB", b/1e6) }

func runN(ctx context.Context, o options, n int, out io.Writer) (rows []string, err error) {
	log := slog.New(slog.DiscardHandler)
	if o.verbose {
		log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	}
	row := func(scenario, format string, a ...any) {
		r := fmt.Sprintf("| %d | %s | %s | %s |", n, scenario, fmt.Sprintf(format, a...), load())
		fmt.Fprintln(out, r)
		rows = append(rows, r)
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Minute)
	defer cancel()
	s, err := scalesim.Start(ctx, scalesim.Options{Hosts: n, Watchers: o.watchers, Namespaces: 3,
		TTL: o.ttl, RenewMargin: o.margin, DialTimeout: o.connect, KeepAliveTimeout: o.keepalive,
		LabBinary: o.labBinary, Log: log})
	if err != nil {
		return nil, err
	}
	defer func() { err = errors.Join(err, s.Close()) }()
	wait := func(what string) error {
		wctx, cancel := context.WithTimeout(ctx, 10*time.Minute)
		defer cancel()
		if err := s.AwaitConverged(wctx, len(s.Hosts)); err != nil {
			return fmt.Errorf("%s: %w", what, err)
		}
		return nil
	}
	fmt.Fprintf(out, "# N=%d watchers=%d ttl=%v renew-margin=%v etcd-dial-timeout=%v etcd-keepalive-timeout=%v load=%s\n",
		n, s.Watchers(), o.ttl, o.margin, cmp.Or(o.connect, agent.DefaultEtcdDialTimeout), cmp.Or(o.keepalive, agent.DefaultEtcdKeepAliveTimeout), load())

	// Boot storm.
	before := s.Counter.Snapshot()
	cpu0, err := bootCPU(s)
	if err != nil {
		return rows, err
	}
	start := time.Now()
	s.Run(0, n)
	progress := time.Now()
	if err := scalesim.Await(ctx, func() error {
		h := s.Held()
		if time.Since(progress) >= time.Minute {
			progress = time.Now()
			cpu, _ := bootCPU(s)
			fmt.Fprintf(out, "# boot: %d of %d hold a lease after %v (load %s); CPU-seconds since the start: %s; %d connections dialled\n",
				h, n, time.Since(start).Round(time.Second), load(), cpu.since(cpu0), s.Counter.Snapshot().Sub(before).Dials)
		}
		if h < n {
			return fmt.Errorf("%d of %d hold a lease", h, n)
		}
		return nil
	}); err != nil {
		return rows, err
	}
	held := time.Since(start)
	if err := wait("boot"); err != nil {
		return rows, err
	}
	converged := time.Since(start)
	cpu1, err := bootCPU(s)
	if err != nil {
		return rows, err
	}
	d := s.Counter.Snapshot().Sub(before)
	orphans, err := orphanLeases(ctx, s.Admin())
	if err != nil {
		return rows, err
	}
	acq := d.Methods["Range"].Sent + d.Methods["Txn"].Sent + d.Methods["LeaseGrant"].Sent + d.Methods["LeaseRevoke"].Sent
	row("boot", "all held %v (per host: %s), all watches converged %v; %.2f requests per acquisition (Range %d, Txn %d, LeaseGrant %d, LeaseRevoke %d); %d failed Txns (conflicts); mean wait per request: Range %v, LeaseGrant %v, Txn %v; %s received by the hosts; %d warnings; CPU-seconds: %s; %d connections dialled (3 per host to start with); %s",
		held.Round(time.Millisecond), s.HoldDelays(0, n), converged.Round(time.Millisecond), float64(acq)/float64(n),
		d.Methods["Range"].Sent, d.Methods["Txn"].Sent, d.Methods["LeaseGrant"].Sent, d.Methods["LeaseRevoke"].Sent,
		d.FailedTxns, d.Methods["Range"].MeanWait().Round(time.Millisecond), d.Methods["LeaseGrant"].MeanWait().Round(time.Millisecond), d.Methods["Txn"].MeanWait().Round(time.Millisecond),
		mb(float64(d.Total().RecvBytes)), s.Warnings(), cpu1.since(cpu0), d.Dials, orphans)

	// Steady state.
	if err := sleep(ctx, 5*time.Second); err != nil {
		return rows, err
	}
	_, self, err := scalesim.SelfUsage()
	if err != nil {
		return rows, err
	}
	u0, err := s.Usage()
	if err != nil {
		return rows, err
	}
	c0, r0 := s.Counter.Snapshot(), s.Renewals()
	if err := sleep(ctx, o.steady); err != nil {
		return rows, err
	}
	u1, err := s.Usage()
	if err != nil {
		return rows, err
	}
	d = s.Counter.Snapshot().Sub(c0)
	sec := o.steady.Seconds()
	t := d.Total()
	var rss []string
	for _, b := range u1.RSS {
		rss = append(rss, fmt.Sprintf("%.0f", float64(b)/1e6))
	}
	row("steady", "%.1f requests/s (%.1f renewals/s), %.1f messages/s received, %.0f B/s sent + %.0f B/s received; etcd CPU %.1f%% of a core (3 members), RSS %s MB; simulator RSS %s",
		float64(t.Sent)/sec, float64(s.Renewals()-r0)/sec, float64(t.Recv)/sec, float64(t.SentBytes)/sec, float64(t.RecvBytes)/sec,
		100*(u1.CPU-u0.CPU).Seconds()/sec, strings.Join(rss, "/"), mb(float64(self)))

	// Propagation.
	for i := range 3 {
		c0 := s.Counter.Snapshot()
		p, err := s.Probe(ctx)
		if err != nil {
			return rows, fmt.Errorf("propagation: %w", err)
		}
		d := s.Counter.Snapshot().Sub(c0)
		row(fmt.Sprintf("propagation %d", i+1), "acquired in %v; seen by all %d watches: %s; %s sent to the watches",
			p.Acquired.Round(time.Millisecond), p.Seen.N, p.Seen, mb(float64(d.Methods["Watch"].RecvBytes)))
	}

	// Leader killed.
	if !o.skip["leader"] {
		leader, err := s.Leader(ctx)
		if err != nil {
			return rows, err
		}
		c0, w0, l0 := s.Counter.Snapshot(), s.WatchRestarts(), s.Lost()
		start := time.Now()
		if err := s.Cluster.Kill(leader); err != nil {
			return rows, err
		}
		p, err := s.Probe(ctx)
		if err != nil {
			return rows, fmt.Errorf("leader: %w", err)
		}
		if err := wait("leader killed"); err != nil {
			return rows, err
		}
		all := time.Since(start)
		d := s.Counter.Snapshot().Sub(c0)
		row("leader killed", "a new lease seen by all after %s (from the kill), all current %v; %d watches listed again, %s re-listed; %d leases lost",
			p.Seen, all.Round(time.Millisecond), s.WatchRestarts()-w0, mb(float64(d.Methods["Range"].RecvBytes)), s.Lost()-l0)
		if err := s.Cluster.Restart(ctx, leader); err != nil {
			return rows, err
		}
		if err := wait("leader back"); err != nil {
			return rows, err
		}
	}

	// A third cut off while leases change and etcd compacts.
	if !o.skip["cutoff"] {
		cut := s.CutOffHosts()
		c0, w0, l0 := s.Counter.Snapshot(), s.WatchRestarts(), s.Lost()
		if err := s.CutOff(ctx); err != nil {
			return rows, err
		}
		churn := max(1, n/50)
		from := len(s.Hosts)
		for range churn {
			if _, err := s.AddHost(); err != nil {
				return rows, err
			}
		}
		s.Run(from, from+churn)
		if err := sleep(ctx, o.cut); err != nil {
			return rows, err
		}
		if err := scalesim.Await(ctx, func() error {
			if h := s.Held(); h < len(s.Hosts) {
				return fmt.Errorf("%d of %d hold a lease", h, len(s.Hosts))
			}
			return nil
		}); err != nil {
			return rows, err
		}
		st, err := s.Admin().Get(ctx, "/")
		if err != nil {
			return rows, err
		}
		if _, err := s.Admin().Compact(ctx, st.Header.Revision, clientv3.WithCompactPhysical()); err != nil {
			return rows, fmt.Errorf("compact: %w", err)
		}
		if err := s.Heal(ctx); err != nil {
			return rows, err
		}
		start := time.Now()
		p, err := s.Probe(ctx)
		if err != nil {
			return rows, fmt.Errorf("cutoff: %w", err)
		}
		if err := wait("after the cut"); err != nil {
			return rows, err
		}
		all := time.Since(start)
		d := s.Counter.Snapshot().Sub(c0)
		row("cutoff+compaction", "%d hosts cut off %v while %d leases were added, then compacted; after healing a new lease seen by all after %s, all current %v; %d watches listed again, %s re-listed; %d leases lost",
			cut, o.cut, churn, p.Seen, all.Round(time.Millisecond), s.WatchRestarts()-w0, mb(float64(d.Methods["Range"].RecvBytes)), s.Lost()-l0)
	}

	// Every member killed and restarted.
	if !o.skip["restart"] {
		c0, w0, l0 := s.Counter.Snapshot(), s.WatchRestarts(), s.Lost()
		start := time.Now()
		if err := s.RestartCluster(ctx); err != nil {
			return rows, err
		}
		up := time.Since(start)
		p, err := s.Probe(ctx)
		if err != nil {
			return rows, fmt.Errorf("restart: %w", err)
		}
		if err := wait("after the restart"); err != nil {
			return rows, err
		}
		all := time.Since(start)
		d := s.Counter.Snapshot().Sub(c0)
		row("cluster restart", "etcd back after %v; a new lease seen by all %s after that; all current %v from the kill; %d watches listed again, %s re-listed, %d requests in all; %d leases lost",
			up.Round(time.Millisecond), p.Seen, all.Round(time.Millisecond), s.WatchRestarts()-w0, mb(float64(d.Methods["Range"].RecvBytes)), d.Total().Sent, s.Lost()-l0)
	}
	if err := s.Check(ctx, true); err != nil {
		return rows, fmt.Errorf("at the end: %w", err)
	}
	return rows, nil
}

// cpuUse is the CPU time used so far by the etcd members and by this
// process (the simulated hosts).
type cpuUse struct{ etcd, sim time.Duration }

func bootCPU(s *scalesim.Sim) (cpuUse, error) {
	u, err := s.Usage()
	if err != nil {
		return cpuUse{}, err
	}
	sim, _, err := scalesim.SelfUsage()
	return cpuUse{u.CPU, sim}, err
}

// since says what was used between c0 and c.
func (c cpuUse) since(c0 cpuUse) string {
	return fmt.Sprintf("etcd %.1f (3 members), simulator %.1f", (c.etcd - c0.etcd).Seconds(), (c.sim - c0.sim).Seconds())
}

func sleep(ctx context.Context, d time.Duration) error {
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(d):
		return nil
	}
}
