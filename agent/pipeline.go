package agent

import (
	"context"
	"fmt"
	"net/netip"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/netagent/netagent/backend"
	"github.com/netagent/netagent/iface"
	"github.com/netagent/netagent/lease"
	"github.com/netagent/netagent/masq"
	"github.com/netagent/netagent/subnet"
	"github.com/netagent/netagent/subnetfile"
)

// pipeline is what one run of serve under one network config holds: the
// backend and interface chosen for the config, this host's lease, the
// masquerade keeper and the channels between them. serve builds it in
// stages, then runs the event loop over it.
type pipeline struct {
	cfg *lease.Config
	be  backend.Backend
	ext iface.External

	// watch delivers the peers' leases; cfgChanges the config's changes.
	watch      <-chan lease.Batch
	cfgChanges <-chan subnet.ConfigUpdate

	holder Holder
	// lease is this host's lease as last received from holder.
	lease lease.Lease
	// keeper keeps the masquerade rules; nil with --ip-masq=false.
	keeper *masq.Keeper

	// updates feeds the backend's Run; beDone receives its return.
	updates chan backend.Update
	beDone  chan error

	// probing is set once the probes started (the data plane was
	// programmed); stopProbe stops them.
	probing   bool
	stopProbe func()
}

// serve runs one pipeline under cfg until ctx is done, the config changes,
// or something fails for good. Its stages: build the backend, hold the
// lease, set up masquerading, write the files, start the data plane, then
// serve events.
func (a *Agent) serve(ctx context.Context, st Store, h *netlink.Handle, ns netns.NsHandle, cfg *lease.Config) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	cfgChanges := st.WatchConfig(ctx)

	a.state.newPipeline(cfg)
	be, ext, err := a.newBackend(ctx, h, ns, cfg)
	if err == nil {
		err = a.checkHost(h, ext, cfg)
	}
	if err != nil {
		a.state.recordError(err.Error())
		a.notifyStatus("network config not usable: %v", err)
		// A config that names an unknown backend or bad backend fields is
		// an invalid config: report it and wait for it to be fixed.
		a.log.Error("cannot use the network config; waiting for it to change", "err", err)
		return a.waitConfigChange(ctx, cfgChanges, cfg)
	}
	p := &pipeline{cfg: cfg, be: be, ext: ext, cfgChanges: cfgChanges, stopProbe: func() {}}
	defer func() { p.stopProbe() }()

	if err := a.holdLease(ctx, st, p); err != nil {
		return err
	}
	defer p.holder.Close()
	if err := a.startMasq(ctx, p); err != nil {
		return err
	}
	if err := a.writeFiles(cfg, be, p.lease); err != nil {
		return err
	}
	if err := a.startDataPlane(ctx, p); err != nil {
		return err
	}
	return a.serveEvents(ctx, h, p)
}

// acquireOptions is what this host's lease is acquired with: the backend's
// data, the public addresses of the enabled families, and the subnets of
// the subnet file a previous run left, to keep them.
func (a *Agent) acquireOptions(p *pipeline) (subnet.AcquireOptions, error) {
	data, err := p.be.BackendData()
	if err != nil {
		return subnet.AcquireOptions{}, err
	}
	dataV6, err := p.be.BackendV6Data()
	if err != nil {
		return subnet.AcquireOptions{}, err
	}
	cfg := p.cfg
	opts := subnet.AcquireOptions{
		Attrs: lease.LeaseAttrs{
			PublicIP:      p.ext.PublicIP,
			PublicIPv6:    p.ext.PublicIPv6,
			BackendType:   cfg.BackendType,
			BackendData:   data,
			BackendV6Data: dataV6,
		},
		TTL:         a.opts.LeaseTTL,
		RenewMargin: a.opts.RenewMargin,
	}
	if !cfg.EnableIPv4 {
		opts.Attrs.PublicIP = netip.Addr{}
	}
	if !cfg.EnableIPv6 {
		opts.Attrs.PublicIPv6 = netip.Addr{}
	}
	if prev, err := subnetfile.Read(a.opts.SubnetFile); err == nil {
		if prev.Network == cfg.Network {
			opts.Previous = prev.Subnet
		}
		if prev.IPv6Network == cfg.IPv6Network {
			opts.PreviousV6 = prev.IPv6Subnet
		}
	}
	return opts, nil
}

// holdLease starts the watch of the peers' leases and acquires this host's
// lease, kept by p.holder (the caller closes it).
func (a *Agent) holdLease(ctx context.Context, st Store, p *pipeline) error {
	opts, err := a.acquireOptions(p)
	if err != nil {
		return err
	}
	a.state.update(func(s *state) { s.ext = p.ext })
	a.notifyStatus("acquiring a lease (%s, interface %s)", p.cfg, p.ext.Name)
	// The lease watch starts from the list of peers the acquisition read
	// (one list per start, not two), so that the first data-plane pass
	// programs the device and every peer at once.
	holder, watch, err := st.HoldAndWatch(ctx, p.cfg, opts)
	if err != nil {
		return err
	}
	p.holder, p.watch, p.lease = holder, watch, holder.Lease()
	l := p.lease
	a.state.update(func(s *state) { s.lease, s.holder = &l, holder })
	a.log.Info("lease acquired", "subnet", l.Key(), "public_ip", p.ext.PublicIP, "reservation", l.Reservation)
	return nil
}

// startMasq enables forwarding and, with --ip-masq, starts the keeper of
// the masquerade rules for the lease.
func (a *Agent) startMasq(ctx context.Context, p *pipeline) error {
	if err := masq.EnableForwarding(p.cfg.EnableIPv4, p.cfg.EnableIPv6); err != nil {
		return fmt.Errorf("agent: enable forwarding: %w", err)
	}
	fw, err := a.newMasq(ctx, p.cfg)
	if err != nil || fw == nil {
		return err
	}
	p.keeper = masq.NewKeeper(a.log, fw, masqRules(p.cfg, p.lease), a.opts.MasqResync)
	go p.keeper.Run(ctx)
	a.state.update(func(s *state) { s.masq, s.keeper = fw, p.keeper })
	return nil
}

// startDataPlane runs the backend and sends it its first update: the own
// lease and, if the watch lists them within firstListWait, every peer.
func (a *Agent) startDataPlane(ctx context.Context, p *pipeline) error {
	p.updates = make(chan backend.Update, 1)
	p.beDone = make(chan error, 1)
	go func() { p.beDone <- p.be.Run(ctx, p.updates) }()
	a.state.update(func(s *state) { s.backend = p.be })
	l := p.lease
	first := backend.Update{Own: &l}
	select {
	case b, ok := <-p.watch:
		if !ok {
			return stopped(ctx, "lease watch")
		}
		first.Batch = &b
	case <-time.After(firstListWait):
		// etcd is slow to list: set the device up now, peers follow.
	case <-ctx.Done():
		return ctx.Err()
	}
	if err := send(ctx, p.updates, first); err != nil {
		return err
	}
	a.notifyStatus("lease %s: programming the data plane", l.Key())
	return nil
}

// serveEvents is the pipeline's event loop: it forwards lease changes to
// the backend, follows this host's own lease, tells systemd when the data
// plane is first programmed, and ends the pipeline when the backend stops,
// the external interface or the config changes, or ctx is done.
func (a *Agent) serveEvents(ctx context.Context, h *netlink.Handle, p *pipeline) error {
	wd := a.newWatchdog()
	defer wd.Stop()
	// The backend signals its first complete pass: then systemd is told
	// (READY=1) that the host can carry traffic.
	ready := p.be.Ready()
	extCheck := time.NewTicker(extCheckInterval)
	defer extCheck.Stop()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case err := <-p.beDone:
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return fmt.Errorf("agent: backend %s stopped: %w", p.be.Type(), err)
		case b, ok := <-p.watch:
			if !ok {
				return stopped(ctx, "lease watch")
			}
			if err := send(ctx, p.updates, backend.Update{Batch: &b}); err != nil {
				return err
			}
		case l, ok := <-p.holder.Changes():
			if !ok {
				return stopped(ctx, "lease holder")
			}
			if err := a.ownLeaseChanged(ctx, p, l); err != nil {
				return err
			}
		case <-extCheck.C:
			if l, err := h.LinkByIndex(p.ext.Index); err == nil && l.Attrs().MTU != p.ext.MTU {
				a.log.Info("external interface MTU changed", "iface", p.ext.Name, "old", p.ext.MTU, "new", l.Attrs().MTU)
				return errInterfaceChanged
			}
		case <-ready:
			ready = nil
			a.dataPlaneReady(ctx, p)
		case u, ok := <-p.cfgChanges:
			if !ok {
				return stopped(ctx, "config watch")
			}
			if a.configChanged(u, p.cfg, h, p.ext) {
				return errConfigChanged
			}
		case <-wd.C():
			a.ping()
		}
	}
}

// ownLeaseChanged follows a change of this host's lease (renewed with
// another value, or re-acquired): masquerade rules, files, the backend,
// and the probes when the subnet moved.
func (a *Agent) ownLeaseChanged(ctx context.Context, p *pipeline, l lease.Lease) error {
	moved := l.Subnet != p.lease.Subnet || l.IPv6Subnet != p.lease.IPv6Subnet
	p.lease = l
	a.state.update(func(s *state) { s.lease = &l })
	a.log.Info("lease changed", "subnet", l.Key())
	a.notifyStatus("serving %s (lease changed)", l.Key())
	if p.keeper != nil {
		p.keeper.Update(masqRules(p.cfg, l))
	}
	if err := a.writeFiles(p.cfg, p.be, l); err != nil {
		return err
	}
	own := l
	if err := send(ctx, p.updates, backend.Update{Own: &own}); err != nil {
		return err
	}
	if moved && p.probing {
		a.restartProbe(ctx, p)
	}
	return nil
}

// dataPlaneReady is the first complete pass of the data plane: the host
// can carry traffic. It tells systemd (READY=1) and starts the probes.
func (a *Agent) dataPlaneReady(ctx context.Context, p *pipeline) {
	a.state.update(func(s *state) { s.readyAt = time.Now() })
	a.notify("READY=1\nSTATUS=serving " + p.lease.Key())
	a.log.Info("data plane programmed", "subnet", p.lease.Key())
	a.restartProbe(ctx, p)
}

// restartProbe (re)starts the probes for the pipeline's current lease; they
// stop with ctx, at the next restart, or when the pipeline ends.
func (a *Agent) restartProbe(ctx context.Context, p *pipeline) {
	// stopProbe returns once the old responders' sockets are closed:
	// the new ones bind the same port.
	p.stopProbe()
	p.stopProbe, p.probing = a.startProbe(ctx, p.cfg, p.be, p.ext, p.lease), true
}
