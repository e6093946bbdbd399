// Package scalesim simulates thousands of hosts sharing one etcd cluster:
// each simulated host runs the agent's own lease code (subnet.Registry's
// HoldAndWatch: the Holder and the lease watch started from its list) with
// its own etcd client connection, and a counting Sink stands in for the
// kernel. The etcd cluster is a real
// 3-member cluster of `netagent-lab etcd` processes, each in its own
// network namespace of a lab; the simulated hosts' connections are made
// from the lab's host namespaces (several simulated hosts share one).
package scalesim

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"

	"github.com/netagent/netagent/agent"
	"github.com/netagent/netagent/internal/await"
	"github.com/netagent/netagent/internal/lab"
	"github.com/netagent/netagent/lease"
	"github.com/netagent/netagent/subnet"
)

// Prefix is the etcd prefix the simulation uses (flannel's).
const Prefix = "/coreos.com/network"

// DefaultConfig is 10.0.0.0/8 cut into /24s: 65,535 subnets.
const DefaultConfig = `{"Network":"10.0.0.0/8","SubnetLen":24,"Backend":{"Type":"vxlan"}}`

// Options configure Start.
type Options struct {
	// Hosts is the number of simulated hosts (N).
	Hosts int
	// Watchers is how many of them also run the lease watch (the first
	// ones); 0 means all. Each watch keeps the agent's own map of every
	// lease, so memory grows as Watchers × Hosts.
	Watchers int
	// Namespaces is the number of lab host namespaces the hosts' etcd
	// connections are made from, hosts spread round robin (at least 1;
	// 3 lets a third of the hosts be cut off).
	Namespaces int
	// Config is the network config JSON (DefaultConfig when empty).
	Config string
	// TTL and RenewMargin are the lease settings (the agent's defaults
	// when zero).
	TTL, RenewMargin time.Duration
	// DialTimeout and KeepAliveTimeout are the agent's
	// --etcd-dial-timeout and --etcd-keepalive-timeout (its defaults when
	// zero): what a starved connection is given before it is dropped and
	// dialled again.
	DialTimeout, KeepAliveTimeout time.Duration
	// LabBinary is the netagent-lab executable that runs etcd.
	LabBinary string
	// Log receives progress messages and the hosts' warnings; nil
	// discards.
	Log *slog.Logger
}

// Host is one simulated host.
type Host struct {
	ID   int
	NS   string
	IP   netip.Addr
	cli  *clientv3.Client
	reg  *subnet.Registry
	opts subnet.AcquireOptions
	// Sink is nil when the host runs no watch.
	Sink *Sink

	mu     sync.Mutex
	holder *subnet.Holder
	// started and held are when Run started the host and when it first
	// held a lease.
	started, held time.Time
	// changes counts leases acquired after the first (a lost lease).
	changes atomic.Int64
	// watchEnded is set when the host's watch channel closed before the
	// simulation stopped.
	watchEnded atomic.Bool
}

// Holder returns the host's holder, nil before it has a lease.
func (h *Host) Holder() *subnet.Holder {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.holder
}

// Sim is a running simulation. Close stops it and removes everything.
type Sim struct {
	Lab     *lab.Lab
	Cluster *lab.EtcdCluster
	Cfg     *lease.Config
	Counter *Counter
	Hosts   []*Host
	opts    Options
	log     *slog.Logger
	admin   *clientv3.Client
	ctx     context.Context
	cancel  context.CancelFunc
	wg      sync.WaitGroup
	// warnings counts the hosts' log records at warning level or above.
	warnings atomic.Int64
}

// Start builds the lab (Namespaces host namespaces), starts a 3-member
// etcd cluster, writes the network config and makes every host's client.
// No host acquires anything yet: see Boot.
func Start(ctx context.Context, opts Options) (_ *Sim, err error) {
	if opts.Hosts < 1 {
		return nil, fmt.Errorf("scalesim: %d hosts", opts.Hosts)
	}
	if opts.Watchers <= 0 || opts.Watchers > opts.Hosts {
		opts.Watchers = opts.Hosts
	}
	opts.Namespaces = max(opts.Namespaces, 1)
	if opts.Config == "" {
		opts.Config = DefaultConfig
	}
	log := opts.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	cfg, err := lease.ParseConfig([]byte(opts.Config))
	if err != nil {
		return nil, fmt.Errorf("scalesim: %w", err)
	}
	if cfg.PoolSize() < uint64(opts.Hosts)+16 {
		return nil, fmt.Errorf("scalesim: a pool of %d subnets for %d hosts", cfg.PoolSize(), opts.Hosts)
	}
	l, err := lab.New(ctx, lab.Options{Hosts: opts.Namespaces, LabBinary: opts.LabBinary, Log: log})
	if err != nil {
		return nil, err
	}
	s := &Sim{Lab: l, Cfg: cfg, Counter: NewCounter(), opts: opts, log: log}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	defer func() {
		if err != nil {
			err = errors.Join(err, s.Close())
		}
	}()
	if s.Cluster, err = l.StartEtcdCluster(ctx, 3); err != nil {
		return nil, err
	}
	if s.admin, err = s.Cluster.Client(); err != nil {
		return nil, err
	}
	if _, err := s.admin.Put(ctx, Prefix+"/config", opts.Config); err != nil {
		return nil, fmt.Errorf("scalesim: put config: %w", err)
	}
	hostLog := slog.New(&warnCounter{n: &s.warnings, next: log.Handler()})
	nss := l.Hosts()
	for i := range opts.Hosts {
		h := &Host{ID: i, NS: nss[i%len(nss)].NS, IP: netip.AddrFrom4([4]byte{100, 64 + byte(i>>16), byte(i >> 8), byte(i)})}
		if h.cli, err = s.client(h.NS, true); err != nil {
			return nil, err
		}
		h.reg = subnet.NewRegistry(h.cli, Prefix, hostLog.With("host", i))
		h.opts = subnet.AcquireOptions{
			Attrs: lease.LeaseAttrs{
				PublicIP:    h.IP,
				BackendType: "vxlan",
				BackendData: []byte(fmt.Sprintf(`{"VNI":1,"VtepMAC":"02:00:00:%02x:%02x:%02x"}`, i>>16&0xff, i>>8&0xff, i&0xff)),
			},
			TTL:         opts.TTL,
			RenewMargin: opts.RenewMargin,
		}
		if i < opts.Watchers {
			h.Sink = newSink(cfg)
		}
		s.Hosts = append(s.Hosts, h)
	}
	return s, nil
}

// client makes an etcd client of every member whose connections are made
// in ns, set up as the agent's (agent.EtcdClientConfig); counted adds the
// Counter's interceptors.
func (s *Sim) client(ns string, counted bool) (*clientv3.Client, error) {
	cfg, err := agent.EtcdClientConfig(agent.EtcdOptions{
		Endpoints:        s.Cluster.Endpoints(),
		DialTimeout:      s.opts.DialTimeout,
		KeepAliveTimeout: s.opts.KeepAliveTimeout,
	})
	if err != nil {
		return nil, fmt.Errorf("scalesim: etcd client: %w", err)
	}
	cfg.DialOptions = append(cfg.DialOptions, grpc.WithContextDialer(func(ctx context.Context, addr string) (net.Conn, error) {
		if counted {
			s.Counter.dials.Add(1)
		}
		return lab.DialInNS(ctx, ns, "tcp", addr)
	}))
	if counted {
		cfg.DialOptions = append(cfg.DialOptions, s.Counter.DialOptions()...)
	}
	cli, err := clientv3.New(cfg)
	if err != nil {
		return nil, fmt.Errorf("scalesim: etcd client: %w", err)
	}
	return cli, nil
}

// Run starts hosts[from:to]: each holds a lease (acquiring it), and once
// it holds one, starts its watch from the acquisition's list if it has a
// sink (Registry.HoldAndWatch, as the agent does). It returns at once.
func (s *Sim) Run(from, to int) {
	for _, h := range s.Hosts[from:to] {
		s.wg.Go(func() { s.runHost(h) })
	}
}

func (s *Sim) runHost(h *Host) {
	h.mu.Lock()
	h.started = time.Now()
	h.mu.Unlock()
	var hd *subnet.Holder
	var watch <-chan lease.Batch
	var err error
	if h.Sink == nil {
		hd, err = h.reg.Hold(s.ctx, s.Cfg, h.opts)
	} else {
		hd, watch, err = h.reg.HoldAndWatch(s.ctx, s.Cfg, h.opts)
	}
	if err != nil {
		return // the simulation stopped
	}
	h.mu.Lock()
	h.holder, h.held = hd, time.Now()
	h.mu.Unlock()
	s.wg.Go(func() {
		for range hd.Changes() {
			h.changes.Add(1)
		}
	})
	if h.Sink == nil {
		return
	}
	for b := range watch {
		h.Sink.apply(b)
	}
	if s.ctx.Err() == nil {
		h.watchEnded.Store(true)
	}
}

// AddHost makes one more host (with a sink) and returns it, not started.
func (s *Sim) AddHost() (*Host, error) {
	i := len(s.Hosts)
	h := &Host{ID: i, NS: s.Lab.Hosts()[0].NS, IP: netip.AddrFrom4([4]byte{100, 64 + byte(i>>16), byte(i >> 8), byte(i)})}
	var err error
	if h.cli, err = s.client(h.NS, true); err != nil {
		return nil, err
	}
	h.reg = subnet.NewRegistry(h.cli, Prefix, nil)
	h.opts = s.Hosts[0].opts
	h.opts.Attrs.PublicIP = h.IP
	s.Hosts = append(s.Hosts, h)
	return h, nil
}

// Held is the number of hosts holding a lease.
func (s *Sim) Held() (n int) {
	for _, h := range s.Hosts {
		if h.Holder() != nil {
			n++
		}
	}
	return n
}

// HoldDelays is the spread, over hosts[from:to] that hold a lease, of the
// time from their start to their first lease.
func (s *Sim) HoldDelays(from, to int) Spread {
	var d []time.Duration
	for _, h := range s.Hosts[from:to] {
		h.mu.Lock()
		if h.holder != nil {
			d = append(d, h.held.Sub(h.started))
		}
		h.mu.Unlock()
	}
	return spreadOf(d)
}

// Lost is the number of leases the hosts lost (and re-acquired) since they
// first held one.
func (s *Sim) Lost() (n int64) {
	for _, h := range s.Hosts {
		n += h.changes.Load()
	}
	return n
}

// Warnings counts the hosts' warnings so far.
func (s *Sim) Warnings() int64 { return s.warnings.Load() }

// Check returns the first broken invariant among the hosts that run:
// every holder is alive, no two hold the same subnet, etcd holds exactly
// the held leases, and (when converged is set) every watch holds exactly
// that set. nil means all hold.
func (s *Sim) Check(ctx context.Context, converged bool) error {
	want := make([]uint64, (uint64(1)<<(s.Cfg.SubnetLen-s.Cfg.Network.Bits())+63)/64)
	ref := newSink(s.Cfg)
	byKey := map[string]int{}
	for _, h := range s.Hosts {
		hd := h.Holder()
		if hd == nil {
			continue
		}
		select {
		case <-hd.Done():
			return fmt.Errorf("host %d: its lease holder stopped", h.ID)
		default:
		}
		if h.watchEnded.Load() {
			return fmt.Errorf("host %d: its lease watch ended", h.ID)
		}
		l := hd.Lease()
		if o, dup := byKey[l.Key()]; dup {
			return fmt.Errorf("hosts %d and %d both hold %s", o, h.ID, l.Key())
		}
		byKey[l.Key()] = h.ID
		i := ref.index(l.Subnet)
		if i < 0 {
			return fmt.Errorf("host %d holds %v, outside the network", h.ID, l.Subnet)
		}
		want[i/64] |= 1 << (i % 64)
	}
	resp, err := s.admin.Get(ctx, Prefix+"/subnets/", clientv3.WithPrefix(), clientv3.WithKeysOnly())
	if err != nil {
		return fmt.Errorf("list leases: %w", err)
	}
	if len(resp.Kvs) != len(byKey) {
		return fmt.Errorf("%d leases in etcd, %d held", len(resp.Kvs), len(byKey))
	}
	for _, kv := range resp.Kvs {
		k := strings.TrimPrefix(string(kv.Key), Prefix+"/subnets/")
		if _, ok := byKey[k]; !ok {
			return fmt.Errorf("lease %s in etcd is held by no host", k)
		}
	}
	if !converged {
		return nil
	}
	for _, h := range s.Hosts {
		if h.Sink == nil || h.Holder() == nil {
			continue
		}
		if !h.Sink.equal(want) {
			return fmt.Errorf("host %d's watch holds %d subnets, not the %d held", h.ID, h.Sink.Len(), popcount(want))
		}
	}
	return nil
}

// Await polls cond every 50 ms until it returns nil, and returns its last
// error when ctx ends first (await.Poll).
func Await(ctx context.Context, cond func() error) error {
	return await.Poll(ctx, 50*time.Millisecond, cond)
}

// AwaitConverged waits until every started host holds a lease and every
// watch holds exactly the held set.
func (s *Sim) AwaitConverged(ctx context.Context, started int) error {
	return Await(ctx, func() error {
		if n := s.Held(); n < started {
			return fmt.Errorf("%d of %d hosts hold a lease", n, started)
		}
		return s.Check(ctx, true)
	})
}

// Admin is a client (not counted) for the simulation's own requests.
func (s *Sim) Admin() *clientv3.Client { return s.admin }

// Leader returns the member that leads now.
func (s *Sim) Leader(ctx context.Context) (*lab.EtcdMember, error) {
	for _, m := range s.Cluster.Members {
		st, err := s.admin.Status(ctx, m.ClientURL())
		if err != nil {
			continue
		}
		if st.Leader == st.Header.MemberId {
			return m, nil
		}
	}
	return nil, errors.New("scalesim: no member says it leads")
}

// RestartCluster kills every member, as a power cut would, and starts them
// all again on their data.
func (s *Sim) RestartCluster(ctx context.Context) error {
	for _, m := range s.Cluster.Members {
		if err := s.Cluster.Kill(m); err != nil {
			return err
		}
	}
	errs := make([]error, len(s.Cluster.Members))
	var wg sync.WaitGroup
	for i, m := range s.Cluster.Members {
		wg.Go(func() { errs[i] = s.Cluster.Restart(ctx, m) })
	}
	wg.Wait()
	return errors.Join(errs...)
}

// EtcdUsage is the CPU time and resident memory of the members now.
type EtcdUsage struct {
	CPU time.Duration // the sum over members
	RSS []int64       // bytes, per member
}

// Usage reads every member's /proc/PID/stat and status.
func (s *Sim) Usage() (EtcdUsage, error) {
	var u EtcdUsage
	for _, m := range s.Cluster.Members {
		p := s.Cluster.Proc(m)
		if p == nil || p.Exited() {
			u.RSS = append(u.RSS, 0)
			continue
		}
		cpu, rss, err := procUsage(p.PID())
		if err != nil {
			return u, err
		}
		u.CPU += cpu
		u.RSS = append(u.RSS, rss)
	}
	return u, nil
}

// SelfUsage is the simulator process's own CPU time and RSS (every
// host's client, holder and watch).
func SelfUsage() (time.Duration, int64, error) { return procUsage(os.Getpid()) }

// procUsage returns pid's user+system CPU time and VmRSS.
func procUsage(pid int) (time.Duration, int64, error) {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, 0, fmt.Errorf("scalesim: %w", err)
	}
	// Fields after the command (which may hold spaces) start at ')'.
	f := strings.Fields(string(stat[strings.LastIndexByte(string(stat), ')')+2:]))
	if len(f) < 13 {
		return 0, 0, fmt.Errorf("scalesim: /proc/%d/stat: short", pid)
	}
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	cpu := time.Duration(ut+st) * 10 * time.Millisecond // USER_HZ is 100 on Linux
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, 0, fmt.Errorf("scalesim: %w", err)
	}
	var rss int64
	for line := range strings.Lines(string(status)) {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			rss = kb * 1024
		}
	}
	return cpu, rss, nil
}

// Close stops every host (without deleting its lease), closes the clients,
// stops etcd and removes the lab.
func (s *Sim) Close() error {
	s.cancel()
	for _, h := range s.Hosts {
		if hd := h.Holder(); hd != nil {
			hd.Close()
		}
	}
	s.wg.Wait()
	for _, h := range s.Hosts {
		if h.cli != nil {
			h.cli.Close()
		}
	}
	if s.admin != nil {
		s.admin.Close()
	}
	return s.Lab.Close()
}

// warnCounter counts records at warning level or above and passes every
// record on.
type warnCounter struct {
	n    *atomic.Int64
	next slog.Handler
}

func (w *warnCounter) Enabled(ctx context.Context, l slog.Level) bool {
	return l >= slog.LevelWarn || w.next.Enabled(ctx, l)
}
func (w *warnCounter) WithAttrs(a []slog.Attr) slog.Handler {
	return &warnCounter{n: w.n, next: w.next.WithAttrs(a)}
}
func (w *warnCounter) WithGroup(g string) slog.Handler {
	return &warnCounter{n: w.n, next: w.next.WithGroup(g)}
}
func (w *warnCounter) Handle(ctx context.Context, r slog.Record) error {
	if r.Level >= slog.LevelWarn {
		w.n.Add(1)
	}
	if w.next.Enabled(ctx, r.Level) {
		return w.next.Handle(ctx, r)
	}
	return nil
}
