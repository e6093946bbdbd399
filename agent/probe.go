package agent

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/vishvananda/netns"

	"github.com/netagent/netagent/backend"
	"github.com/netagent/netagent/iface"
	"github.com/netagent/netagent/lease"
	"github.com/netagent/netagent/probe"
)

// peerSyncInterval is how often the prober's peer set and the backend's
// per-peer Programmed flags are refreshed from the backend's Status, and
// an explicit offload setting is checked.
const peerSyncInterval = time.Second

// probeTarget is what the probe of one address family of a pipeline works
// from: this host's addresses and how a peer is probed.
type probeTarget struct {
	// v6 is the family: IPv6 when set.
	v6 bool
	// own is the address probes are sent from and the responder answers
	// on through the overlay.
	own netip.Addr
	// public is the source of underlay probes.
	public netip.Addr
	// respond are the addresses the responder answers on.
	respond []netip.Addr
	// peerOverlay is the address a peer is probed at through the overlay.
	peerOverlay func(backend.PeerStatus) netip.Addr
}

// family names the target's address family.
func (t probeTarget) family() string {
	if t.v6 {
		return "IPv6"
	}
	return "IPv4"
}

// device is the target's vxlan device in st (flannel.<VNI> or
// flannel-v6.<VNI>); empty for host-gw.
func (t probeTarget) device(st backend.Status) string {
	if t.v6 {
		return st.DeviceV6
	}
	return st.Device
}

// newProbeTargets returns a probe target per address family of lease,
// IPv4 first (see newProbeTarget). A family that cannot be probed is left
// out, with an error saying why; the error is also set when no family
// can be.
func newProbeTargets(beType string, lease lease.Lease, ext iface.External) ([]probeTarget, error) {
	var (
		ts   []probeTarget
		errs []error
	)
	for _, f := range []struct {
		sn           netip.Prefix
		addr, public netip.Addr
	}{{lease.Subnet, ext.Addr, ext.PublicIP}, {lease.IPv6Subnet, ext.AddrV6, ext.PublicIPv6}} {
		if !f.sn.IsValid() {
			continue
		}
		t, err := newProbeTarget(beType, f.sn, f.addr, f.public)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		ts = append(ts, t)
	}
	if len(ts) == 0 && len(errs) == 0 {
		errs = append(errs, fmt.Errorf("lease %s has no subnet", lease.Key()))
	}
	return ts, errors.Join(errs...)
}

// newProbeTarget says how a host of backend type beType probes the
// address family of its lease subnet sn, with addr and public the
// external interface's address and public IP of that family. For vxlan,
// the overlay address is the lease's network address (the /32 of
// flannel.<VNI>, or the /128 of flannel-v6.<VNI>): probes go through the
// device, encapsulated. host-gw has no overlay address of its own until a
// container is attached (the bridge plugin gives cni0 the subnet's first
// address, and the agent does not own cni0), and no encapsulation: the
// path to a peer's subnet is the underlay path to its public IP, so that
// is what is probed, small and full-MTU, with the route checked through
// Programmed.
func newProbeTarget(beType string, sn netip.Prefix, addr, public netip.Addr) (probeTarget, error) {
	v6 := sn.Addr().Is6()
	t := probeTarget{v6: v6, public: addr}
	if !addr.IsValid() || addr.Is6() != v6 {
		return probeTarget{}, fmt.Errorf("lease %s: the external interface has no %s address to probe from", sn, t.family())
	}
	local := []netip.Addr{addr}
	if public.IsValid() && public.Is6() == v6 && public != addr {
		// Behind NAT probes to the public IP may arrive for either.
		local = append(local, public)
	}
	switch beType {
	case "vxlan", "wireguard":
		// Both: the lease's network address on the overlay device.
		t.own = probe.OverlayAddr(beType, sn)
		t.respond = append([]netip.Addr{t.own}, local...)
		t.peerOverlay = func(p backend.PeerStatus) netip.Addr { return probe.OverlayAddr(beType, p.Subnet) }
	case "host-gw":
		t.own, t.respond = addr, local
		t.peerOverlay = func(p backend.PeerStatus) netip.Addr { return p.PublicIP }
	default:
		return probeTarget{}, fmt.Errorf("backend %q: no probe", beType)
	}
	return t, nil
}

// probePeers returns the peers of the target's family to probe from the
// backend's status (which lists a dual-stack peer once per family, with
// the public IP of that family).
func (t probeTarget) probePeers(st backend.Status) []probe.Peer {
	var peers []probe.Peer
	for _, p := range st.Peers {
		if p.Subnet.Addr().Is6() != t.v6 || !p.PublicIP.IsValid() || p.PublicIP.Is6() != t.v6 || p.PublicIP.Is4In6() {
			continue
		}
		peers = append(peers, probe.Peer{Subnet: p.Subnet, Overlay: t.peerOverlay(p), PublicIP: p.PublicIP})
	}
	return peers
}

// familyProbe is the prober of one address family.
type familyProbe struct {
	t probeTarget
	p *probe.Prober
}

// startProbe starts, for the pipeline of cfg, the probe responders and
// probers (with --probe), one of each per address family of the lease,
// and keeps an explicit offload setting of every vxlan device (with
// --vxlan-tx-csum-offload=on|off). With both families each prober gets
// half of --probe-rate, so that the host stays within it, and status
// shows them as one (proberSet). A responder is kept serving by a
// probe.ResponderKeeper: one that cannot bind or fails is retried with a
// capped backoff, and the health check "probe" fails meanwhile. A prober
// that fails is logged and recorded, not fatal: the data plane serves on,
// and a family that fails leaves the other probing.
//
// The returned stop cancels everything started here and returns once it
// has stopped: the responders' sockets are closed then, so that the next
// startProbe can bind the same port (a subnet change restarts the probes
// with the public IP's socket unchanged).
func (a *Agent) startProbe(ctx context.Context, cfg *lease.Config, be backend.Backend, ext iface.External, lease lease.Lease) (stop func()) {
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	stop = func() { cancel(); wg.Wait() }
	sws, keep := a.offloadSwitches(ctx, be)
	if !a.opts.Probe {
		a.state.update(func(s *state) { s.probeNote = "off (--probe=false)" })
		wg.Go(func() { syncLoop(ctx, keep) })
		return stop
	}
	targets, err := newProbeTargets(be.Type(), lease, ext)
	if len(targets) == 0 {
		a.state.update(func(s *state) { s.probeNote = err.Error() })
		wg.Go(func() { syncLoop(ctx, keep) })
		return stop
	}
	if err != nil {
		a.probeFailed("targets", err)
	}
	var prog programmedSet
	bst := be.Status()
	src := responderSources(bst, lease, ext)
	var (
		fps []*familyProbe
		rs  []familyResponder
	)
	for _, t := range targets {
		k := a.newResponderKeeper(t, src)
		rs = append(rs, familyResponder{family: t.family(), k: k})
		wg.Go(func() { k.Run(ctx) })
		if fp := a.newFamilyProber(t, be, sws[t.device(bst)], prog.has, len(targets)); fp != nil {
			fps = append(fps, fp)
		}
	}
	for i, peers := range prog.peersOf(be.Status(), fps) {
		fps[i].p.SetPeers(peers)
	}
	set := make(proberSet, 0, len(fps))
	for _, fp := range fps {
		set = append(set, fp.p)
	}
	a.state.update(func(s *state) {
		s.setResponders(rs)
		s.probers = set
		if len(set) > 0 {
			s.probeNote = ""
		}
	})
	for _, fp := range fps {
		wg.Go(func() {
			if err := fp.p.Run(ctx); err != nil {
				a.probeFailed(fp.t.family()+" prober stopped", err)
			}
		})
	}
	wg.Go(func() { syncLoop(ctx, peerSync(be, lease, ext, fps, rs, src, &prog, keep)) })
	return stop
}

// probeFailed logs and records a failure of the probe subsystem.
func (a *Agent) probeFailed(what string, err error) {
	msg := fmt.Sprintf("probe: %s: %v", what, err)
	a.log.Error("probing disabled", "why", msg)
	a.state.recordError(msg)
	a.state.update(func(s *state) { s.probeNote = msg })
}

// offloadSwitches opens the checksum offload switch of each vxlan device
// (IPv4's first), by device name, and returns keep, which re-applies an
// explicit --vxlan-tx-csum-offload setting to each (nil when there is
// none to keep). The switches close when ctx is done.
func (a *Agent) offloadSwitches(ctx context.Context, be backend.Backend) (map[string]*probe.Ethtool, func()) {
	sws := map[string]*probe.Ethtool{}
	if be.Type() != "vxlan" {
		return sws, nil
	}
	bst := be.Status()
	var keeps []func()
	for _, dev := range []string{bst.Device, bst.DeviceV6} {
		if dev == "" {
			continue
		}
		sw, err := probe.OpenEthtool(netns.None(), dev)
		if err != nil {
			a.probeFailed("checksum offload", err)
			continue
		}
		context.AfterFunc(ctx, func() { sw.Close() })
		sws[dev] = sw
		if a.opts.TxCsumOffload != OffloadAuto {
			keeps = append(keeps, a.offloadKeeper(sw, a.opts.TxCsumOffload == OffloadOn, len(keeps)))
		}
	}
	if len(keeps) == 0 {
		return sws, nil
	}
	keep := func() {
		for _, k := range keeps {
			k()
		}
	}
	keep()
	return sws, keep
}

// newResponderKeeper returns the keeper of target t's responder, which
// answers the sources src.
func (a *Agent) newResponderKeeper(t probeTarget, src *probe.Sources) *probe.ResponderKeeper {
	// netns.None(): the agent's own namespace. (A zero handle would be
	// taken for an open one, file descriptor 0.)
	return probe.NewResponderKeeper(probe.ResponderConfig{Log: a.log.With("family", t.family()), Netns: netns.None(),
		Addrs: t.respond, Port: a.opts.ProbePort, Sources: src}, 0, 0)
}

// newFamilyProber returns the prober of target t (not yet running, with
// no peers), or nil after recording a failure. sw is the offload switch
// of t's device (nil for none), programmed tells the prober whether a
// peer's entries are in the kernel, and families is how many share
// --probe-rate.
func (a *Agent) newFamilyProber(t probeTarget, be backend.Backend, sw *probe.Ethtool, programmed func(probe.Peer) bool, families int) *familyProbe {
	o := a.opts
	pc := probe.Config{
		Log:          a.log.With("family", t.family()),
		Netns:        netns.None(),
		LocalOverlay: t.own,
		LocalPublic:  t.public,
		Port:         o.ProbePort,
		MTU:          be.MTU(),
		Interval:     o.ProbeInterval,
		Rate:         o.ProbeRate / float64(families),
		Programmed:   programmed,
		AutoOffload:  o.AutoCsumOffload && o.TxCsumOffload == OffloadAuto,
		OnResult:     a.state.probeResult,
		OnOffload:    a.state.offloadChanged,
	}
	if sw != nil {
		pc.Offload = sw
	}
	p, err := probe.New(pc)
	if err != nil {
		a.probeFailed(t.family()+" prober", err)
		return nil
	}
	a.log.Info("probing peers", "family", t.family(), "overlay_addr", t.own, "responder", t.respond, "port", o.ProbePort,
		"interval", o.ProbeInterval, "rate", pc.Rate, "mtu", pc.MTU, "offload_device", t.device(be.Status()), "auto_csum_offload", pc.AutoOffload)
	return &familyProbe{t: t, p: p}
}

// responderSources is who the responders answer: the cluster's hosts as
// the backend knows them from the lease watch (every peer's subnet, where
// its overlay address is, and public IP), this host's own lease (its
// containers and overlay address) and this host's external addresses.
func responderSources(st backend.Status, own lease.Lease, ext iface.External) *probe.Sources {
	addrs := []netip.Addr{ext.Addr, ext.PublicIP, ext.AddrV6, ext.PublicIPv6}
	subnets := []netip.Prefix{own.Subnet, own.IPv6Subnet}
	for _, p := range st.Peers {
		addrs = append(addrs, p.PublicIP)
		subnets = append(subnets, p.Subnet)
	}
	return probe.NewSources(addrs, subnets)
}

// familyResponder is the responder keeper of one address family.
type familyResponder struct {
	family string
	k      *probe.ResponderKeeper
}

// programmedSet is the backend's peers (Status.Peers, sorted by subnet),
// which say whether the kernel entries of each subnet are programmed, for
// every family at once (a peer's subnets of two families differ); the
// probers read it from their goroutines. It is the backend's own
// read-only list, not a copy: with 5,000 peers a map of their subnets
// would hold 0.4 MB more.
type programmedSet struct {
	peers atomic.Pointer[[]backend.PeerStatus]
}

// comparePeerSubnet orders peers by subnet, as Status.Peers is sorted.
func comparePeerSubnet(p backend.PeerStatus, sn netip.Prefix) int {
	if c := p.Subnet.Addr().Compare(sn.Addr()); c != 0 {
		return c
	}
	return p.Subnet.Bits() - sn.Bits()
}

// store makes peers the set (sorted first if a backend did not sort them).
func (ps *programmedSet) store(peers []backend.PeerStatus) {
	bySubnet := func(a, b backend.PeerStatus) int { return comparePeerSubnet(a, b.Subnet) }
	if !slices.IsSortedFunc(peers, bySubnet) {
		peers = slices.SortedFunc(slices.Values(peers), bySubnet)
	}
	ps.peers.Store(&peers)
}

// has reports whether p's subnet is programmed.
func (ps *programmedSet) has(p probe.Peer) bool {
	peers := ps.peers.Load()
	if peers == nil {
		return false
	}
	i, ok := slices.BinarySearchFunc(*peers, p.Subnet, comparePeerSubnet)
	return ok && (*peers)[i].Programmed
}

// peersOf returns the peers of each family probe in st, and records which
// are programmed.
func (ps *programmedSet) peersOf(st backend.Status, fps []*familyProbe) [][]probe.Peer {
	ps.store(st.Peers)
	out := make([][]probe.Peer, 0, len(fps))
	for _, fp := range fps {
		out = append(out, fp.t.probePeers(st))
	}
	return out
}

// peerSync returns the periodic refresh of the probers' peers and the
// responders' sources from the backend's status (and of the offload
// setting, keep, when not nil); src is the sources the responders were
// started with.
func peerSync(be backend.Backend, own lease.Lease, ext iface.External, fps []*familyProbe, rs []familyResponder,
	src *probe.Sources, prog *programmedSet, keep func()) func() {
	var seen []backend.PeerStatus
	return func() {
		if keep != nil {
			keep()
		}
		st := be.Status()
		if sameSlice(st.Peers, seen) {
			// The backend hands out the same (read-only) peers until one
			// changes: nothing to redo for 5,000 of them each second.
			return
		}
		seen = st.Peers
		// The probers keep what they were given and leave a peer
		// whose addresses did not change as it is: no copy is kept
		// here to compare with.
		for i, next := range prog.peersOf(st, fps) {
			fps[i].p.SetPeers(next)
		}
		if next := responderSources(st, own, ext); !next.Equal(src) {
			src = next
			for _, r := range rs {
				r.k.SetSources(next)
			}
		}
	}
}

// sameSlice reports whether a and b are the same slice: same length and,
// unless empty, same first element.
func sameSlice[T any](a, b []T) bool {
	return len(a) == len(b) && (len(a) == 0 || &a[0] == &b[0])
}

// proberSet is a pipeline's probers, one per address family of its
// lease (IPv4 first), seen as one.
type proberSet []*probe.Prober

// Status merges the probers' snapshots (probe.MergeStatus).
func (ps proberSet) Status() probe.Status {
	if len(ps) == 1 {
		return ps[0].Status()
	}
	sts := make([]probe.Status, 0, len(ps))
	for _, p := range ps {
		sts = append(sts, p.Status())
	}
	return probe.MergeStatus(sts...)
}

// syncLoop calls f every peerSyncInterval until ctx is done; a nil f
// returns at once.
func syncLoop(ctx context.Context, f func()) {
	if f == nil {
		return
	}
	t := time.NewTicker(peerSyncInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			f()
		}
	}
}

// offloadKeeper returns a function that sets TX checksum offload of sw's
// device to on when it is not (the device may have been re-created), and
// records the setting for the status report as the i-th device's.
//
// Equivalent to: `ethtool -K flannel.1 tx on|off`.
func (a *Agent) offloadKeeper(sw probe.OffloadSwitch, on bool, i int) func() {
	lastErr := ""
	return func() {
		st := probe.OffloadStatus{Device: sw.Device()}
		cur, err := sw.TxChecksum()
		if err == nil && cur != on {
			if err = sw.SetTxChecksum(on); err == nil {
				a.log.Info("TX checksum offload set", "device", sw.Device(), "on", on)
				cur = on
			}
		}
		if err != nil {
			st.Err = err.Error()
			if st.Err != lastErr {
				a.log.Warn("cannot set TX checksum offload", "device", sw.Device(), "on", on, "err", err)
			}
		}
		lastErr = st.Err
		st.TxChecksum = cur
		a.state.update(func(s *state) {
			if len(s.offloadFixed) <= i {
				s.offloadFixed = append(s.offloadFixed, make([]probe.OffloadStatus, i+1-len(s.offloadFixed))...)
			}
			s.offloadFixed[i] = st
		})
	}
}
