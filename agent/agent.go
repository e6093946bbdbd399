package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"reflect"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/netagent/netagent/backend"
	"github.com/netagent/netagent/iface"
	"github.com/netagent/netagent/internal/netnsguard"
	"github.com/netagent/netagent/lease"
	"github.com/netagent/netagent/masq"
	"github.com/netagent/netagent/subnet"
	"github.com/netagent/netagent/subnetfile"
)

// Agent is one host's agent.
type Agent struct {
	opts     *Options
	log      *slog.Logger
	backends backend.Kinds
	state    *state
}

// New returns an agent that runs the backend of the config's Backend.Type,
// one of backends.
func New(opts *Options, log *slog.Logger, backends backend.Kinds) *Agent {
	return &Agent{opts: opts, log: log, backends: backends, state: newState(time.Now())}
}

// errInterfaceChanged ends one serving pipeline when the external
// interface's MTU changed: the next one derives the overlay MTU, the device
// and the files from the new value.
var errInterfaceChanged = errors.New("agent: external interface changed")

// extCheckInterval is how often the external interface's MTU is compared
// with the one the pipeline was built for.
const extCheckInterval = 5 * time.Second

// firstListWait bounds how long the first data-plane pass waits for the
// peers' list after the lease is held.
const firstListWait = 2 * time.Second

// errConfigChanged ends one serving pipeline so that Run starts the next
// under the new network config.
var errConfigChanged = errors.New("agent: network config changed")

// Run serves until ctx is done. It returns nil only when ctx is done; any
// other return is an error the agent cannot recover from by itself, so that
// systemd restarts it.
func (a *Agent) Run(ctx context.Context) error {
	if err := netnsguard.Check(); err != nil {
		return err
	}
	lock, err := lockInstance(a.opts.InstanceKey())
	if err != nil {
		return err
	}
	defer lock.Close()
	storeOpts := slog.Any("etcd", a.opts.Etcd)
	if a.opts.Kube.Enabled {
		storeOpts = slog.Any("kube", a.opts.Kube)
	}
	a.log.Info("starting netagent", storeOpts, "subnet_file", a.opts.SubnetFile,
		"ip_masq", a.opts.IPMasq, "lease_ttl", a.opts.LeaseTTL, "renew_margin", a.opts.RenewMargin)
	defer func() {
		if ctx.Err() != nil {
			// The kernel entries, files and lease stay: a restarted agent
			// takes them over without a gap in traffic.
			a.log.Info("netagent stopped; kernel state, files and lease left in place")
		}
	}()
	st, closeStore, err := a.openStore(ctx)
	if err != nil {
		return err
	}
	defer closeStore()

	ns, err := netns.Get()
	if err != nil {
		return fmt.Errorf("agent: current network namespace: %w", err)
	}
	defer ns.Close()
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		return fmt.Errorf("agent: netlink: %w", err)
	}
	defer h.Close()

	a.state.update(func(s *state) { s.registry = st })
	if err := a.startServers(ctx); err != nil {
		return err
	}

	for {
		a.notifyStatus("waiting for a usable network config at %s", st.ConfigKey())
		stopPing := a.pingWhile(ctx)
		cfg, err := st.WaitConfig(ctx)
		stopPing()
		if err != nil {
			return ctxDone(ctx, err)
		}
		a.log.Info("network config", "config", cfg.String())
		err = a.serve(ctx, st, h, ns, cfg)
		if errors.Is(err, errConfigChanged) {
			a.log.Info("network config changed: restarting with the new config")
			continue
		}
		if errors.Is(err, errInterfaceChanged) {
			a.log.Info("external interface changed: restarting the pipeline")
			continue
		}
		return ctxDone(ctx, err)
	}
}

// openStore opens the cluster store of the options (etcd, or the
// Kubernetes API with --kube-subnet-mgr) and starts probing it; the
// returned function closes it.
func (a *Agent) openStore(ctx context.Context) (Store, func(), error) {
	if a.opts.Kube.Enabled {
		return a.openKube(ctx)
	}
	cli, err := newEtcdClient(a.opts.Etcd)
	if err != nil {
		return nil, nil, err
	}
	go checkEtcdTLS(ctx, a.opts.Etcd, a.log)
	reg := subnet.NewRegistry(cli, a.opts.Etcd.Prefix, a.log)
	a.state.update(func(s *state) { s.storeKind = StoreEtcd })
	go a.probeStore(ctx, etcdAsk(cli, reg.ConfigKey()))
	return etcdStore{reg}, func() { cli.Close() }, nil
}

// ctxDone turns an error caused by ctx ending into a clean return.
func ctxDone(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return nil
	}
	return err
}

// configChanged reports whether u brings a valid config other than cfg. A
// config that became invalid or was deleted, or that collides with this
// host (CheckHost: the probe port; the subnets of ext, when the pipeline
// has one), is reported, and the one in force is kept: the data plane goes
// on serving.
func (a *Agent) configChanged(u subnet.ConfigUpdate, cfg *lease.Config, h *netlink.Handle, ext iface.External) bool {
	err := u.Err
	if err == nil {
		err = a.checkHost(h, ext, u.Config)
	}
	if err != nil {
		a.log.Error("network config is not usable; keeping the one in force", "err", err)
		a.state.recordError(err.Error())
		return false
	}
	return !sameConfig(u.Config, cfg)
}

// checkHost checks cfg against this host (CheckHost): the probe port when
// probing, and the subnets of ext when there is one (Index not 0).
func (a *Agent) checkHost(h *netlink.Handle, ext iface.External, cfg *lease.Config) error {
	var env HostEnv
	if a.opts.Probe {
		env.ProbePort = a.opts.ProbePort
	}
	if h != nil && ext.Index != 0 {
		subnets, err := interfaceSubnets(h, ext.Name, ext.Index)
		if err != nil {
			a.log.Warn("cannot check the network config against the external interface's subnets", "err", err)
		}
		env.Underlay = subnets
	}
	return errors.Join(CheckHost(cfg, env)...)
}

// newBackend selects the external interface and builds the configured
// backend.
func (a *Agent) newBackend(ctx context.Context, h *netlink.Handle, ns netns.NsHandle, cfg *lease.Config) (backend.Backend, iface.External, error) {
	kind, err := a.backends.Lookup(cfg.BackendType)
	if err != nil {
		return nil, iface.External{}, err
	}
	io := a.opts.Iface
	io.EnableIPv4, io.EnableIPv6 = cfg.EnableIPv4, cfg.EnableIPv6
	ext, err := iface.SelectWait(ctx, h, io, a.log)
	if err != nil {
		return nil, ext, err
	}
	a.log.Info("external interface", "name", ext.Name, "addr", ext.Addr, "public_ip", ext.PublicIP, "mtu", ext.MTU)
	be, err := kind.New(backend.Options{
		Log:            a.log.With("backend", cfg.BackendType),
		Handle:         h,
		Netns:          ns,
		Ext:            ext,
		Config:         cfg,
		ResyncInterval: a.opts.ResyncInterval,
		NoRepair:       a.opts.NoRepair,
	})
	return be, ext, err
}

// newMasq returns the masquerade manager, or nil when --ip-masq is off; in
// that case rules a previous run left are removed.
func (a *Agent) newMasq(ctx context.Context, cfg *lease.Config) (masq.Manager, error) {
	useNFT := a.opts.NFTables || cfg.EnableNFTables
	var m masq.Manager
	var err error
	names := MasqNames(a.opts.InstanceKey())
	if useNFT {
		m, err = masq.NewNFTables(a.log, masq.WithTable(names.Table))
	} else {
		m, err = masq.NewIPTables(a.log, masq.WithChains(names))
	}
	if err != nil {
		return nil, fmt.Errorf("agent: masquerade: %w", err)
	}
	if !a.opts.IPMasq {
		if err := m.Remove(ctx); err != nil {
			a.log.Warn("removing masquerade rules of a previous run failed", "err", err)
		}
		return nil, nil
	}
	return m, nil
}

// writeFiles writes the subnet file and the Docker options file for lease.
func (a *Agent) writeFiles(cfg *lease.Config, be backend.Backend, lease lease.Lease) error {
	info := subnetfile.Info{
		Network:     cfg.Network,
		Subnet:      lease.Subnet,
		IPv6Network: cfg.IPv6Network,
		IPv6Subnet:  lease.IPv6Subnet,
		MTU:         be.MTU(),
		IPMasq:      a.opts.IPMasq,
	}
	if !cfg.EnableIPv4 {
		info.Network = netip.Prefix{}
	}
	if !cfg.EnableIPv6 {
		info.IPv6Network = netip.Prefix{}
	}
	if err := subnetfile.Write(a.opts.SubnetFile, info); err != nil {
		return fmt.Errorf("agent: subnet file: %w", err)
	}
	if a.opts.DockerOptsFile != "" {
		if err := subnetfile.WriteDockerOpts(a.opts.DockerOptsFile, info); err != nil {
			return fmt.Errorf("agent: docker options file: %w", err)
		}
	}
	a.state.update(func(s *state) { s.filesAt = time.Now() })
	a.log.Info("files written", "subnet_file", a.opts.SubnetFile, "docker_opts_file", a.opts.DockerOptsFile, "mtu", info.MTU)
	return nil
}

func masqRules(cfg *lease.Config, lease lease.Lease) masq.Rules {
	var r masq.Rules
	if cfg.EnableIPv4 {
		r.Network, r.Subnet = cfg.Network, lease.Subnet
	}
	if cfg.EnableIPv6 {
		r.IPv6Network, r.IPv6Subnet = cfg.IPv6Network, lease.IPv6Subnet
	}
	return r
}

// sameConfig reports whether two configs are the same for the data plane:
// every field equal, Backend compared as text. Comparing the whole struct,
// rather than a list of fields, keeps a field added to lease.Config from
// being ignored.
func sameConfig(a, b *lease.Config) bool {
	x, y := *a, *b
	x.Backend, y.Backend = nil, nil
	return string(a.Backend) == string(b.Backend) && reflect.DeepEqual(x, y)
}

// waitConfigChange blocks until a valid config other than cfg arrives.
func (a *Agent) waitConfigChange(ctx context.Context, changes <-chan subnet.ConfigUpdate, cfg *lease.Config) error {
	wd := a.newWatchdog()
	defer wd.Stop()
	for {
		select {
		case <-wd.C():
			a.ping()
		case <-ctx.Done():
			return ctx.Err()
		case u, ok := <-changes:
			if !ok {
				return stopped(ctx, "config watch")
			}
			if a.configChanged(u, cfg, nil, iface.External{}) {
				return errConfigChanged
			}
		}
	}
}

// stopped is the error for a channel of what that closed: ctx's error when
// ctx ended (the normal way), else an error, so that the agent never exits 0
// while it should be serving.
func stopped(ctx context.Context, what string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	return fmt.Errorf("agent: %s stopped unexpectedly", what)
}

func send(ctx context.Context, ch chan<- backend.Update, u backend.Update) error {
	select {
	case ch <- u:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
