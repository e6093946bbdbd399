package agent

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"sync/atomic"
	"time"

	"github.com/vishvananda/netns"

	"github.com/netagent/netagent/backend"
	"github.com/netagent/netagent/iface"
	"github.com/netagent/netagent/probe"
	"github.com/netagent/netagent/subnet"
)

// peerSyncInterval is how often the prober's peer set and the backend's
// per-peer Programmed flags are refreshed from the backend's Status, and
// an explicit offload setting is checked.
const peerSyncInterval = time.Second

// probeTarget is what the probe of one pipeline works from: this host's
// addresses and how a peer is probed.
type probeTarget struct {
	// own is the address probes are sent from and the responder answers
	// on through the overlay.
	own netip.Addr
	// respond are the addresses the responder answers on.
	respond []netip.Addr
	// peerOverlay is the address a peer is probed at through the overlay.
	peerOverlay func(backend.PeerStatus) netip.Addr
}

// newProbeTarget says how a host of backend type beType with lease and
// external interface ext probes. For vxlan, the overlay address is the
// lease's network address (flannel.<VNI>'s /32): probes go through the
// device, encapsulated. host-gw has no overlay address of its own until a
// container is attached (the bridge plugin gives cni0 the subnet's first
// address, and the agent does not own cni0), and no encapsulation: the
// path to a peer's subnet is the underlay path to its public IP, so that
// is what is probed, small and full-MTU, with the route checked through
// Programmed.
func newProbeTarget(beType string, lease subnet.Lease, ext iface.External) (probeTarget, error) {
	if !lease.Subnet.Addr().Is4() || !ext.Addr.Is4() {
		return probeTarget{}, fmt.Errorf("no IPv4 overlay: probing is IPv4 only")
	}
	local := []netip.Addr{ext.Addr}
	if ext.PublicIP.Is4() && ext.PublicIP != ext.Addr {
		// Behind NAT probes to the public IP may arrive for either.
		local = append(local, ext.PublicIP)
	}
	switch beType {
	case "vxlan":
		own := probe.OverlayAddr(beType, lease.Subnet)
		return probeTarget{own: own, respond: append([]netip.Addr{own}, local...),
			peerOverlay: func(p backend.PeerStatus) netip.Addr { return probe.OverlayAddr(beType, p.Subnet) }}, nil
	case "host-gw":
		return probeTarget{own: ext.Addr, respond: local,
			peerOverlay: func(p backend.PeerStatus) netip.Addr { return p.PublicIP }}, nil
	default:
		return probeTarget{}, fmt.Errorf("backend %q: no probe", beType)
	}
}

// probePeers returns the peers to probe from the backend's status, and
// whether each is programmed.
func (t probeTarget) probePeers(st backend.Status) ([]probe.Peer, map[netip.Prefix]bool) {
	var peers []probe.Peer
	programmed := make(map[netip.Prefix]bool, len(st.Peers))
	for _, p := range st.Peers {
		if !p.Subnet.Addr().Is4() || !p.PublicIP.Is4() {
			continue
		}
		peers = append(peers, probe.Peer{Subnet: p.Subnet, Overlay: t.peerOverlay(p), PublicIP: p.PublicIP})
		programmed[p.Subnet] = p.Programmed
	}
	return peers, programmed
}

// startProbe starts, for the pipeline of cfg, the probe responder and
// prober (with --probe) and keeps an explicit offload setting (with
// --vxlan-tx-csum-offload=on|off). They stop when ctx is done. A failure
// is logged and recorded, not fatal: the data plane serves on.
func (a *Agent) startProbe(ctx context.Context, cfg *subnet.Config, be backend.Backend, ext iface.External, lease subnet.Lease) {
	o := a.opts
	fail := func(what string, err error) {
		msg := fmt.Sprintf("probe: %s: %v", what, err)
		a.log.Error("probing disabled", "why", msg)
		a.state.recordError(msg)
		a.state.update(func(s *state) { s.probeNote = msg })
	}
	var sw *probe.Ethtool
	if dev := be.Status().Device; be.Type() == "vxlan" && dev != "" {
		var err error
		if sw, err = probe.OpenEthtool(netns.None(), dev); err != nil {
			fail("checksum offload", err)
		} else {
			context.AfterFunc(ctx, func() { sw.Close() })
		}
	}
	var keep func()
	if sw != nil && o.TxCsumOffload != OffloadAuto {
		keep = a.offloadKeeper(sw, o.TxCsumOffload == OffloadOn)
		keep()
	}
	if !o.Probe {
		a.state.update(func(s *state) { s.probeNote = "off (--probe=false)" })
		go syncLoop(ctx, keep)
		return
	}
	t, err := newProbeTarget(be.Type(), lease, ext)
	if err != nil {
		a.state.update(func(s *state) { s.probeNote = err.Error() })
		go syncLoop(ctx, keep)
		return
	}
	// netns.None(): the agent's own namespace. (A zero handle would be
	// taken for an open one, file descriptor 0.)
	r, err := probe.NewResponder(probe.ResponderConfig{Log: a.log, Netns: netns.None(), Addrs: t.respond, Port: o.ProbePort})
	if err != nil {
		fail("responder", err)
		go syncLoop(ctx, keep)
		return
	}
	var programmed atomic.Pointer[map[netip.Prefix]bool]
	peers, prog := t.probePeers(be.Status())
	programmed.Store(&prog)
	pc := probe.Config{
		Log:          a.log,
		Netns:        netns.None(),
		LocalOverlay: t.own,
		LocalPublic:  ext.Addr,
		Port:         o.ProbePort,
		MTU:          be.MTU(),
		Interval:     o.ProbeInterval,
		Rate:         o.ProbeRate,
		Programmed:   func(p probe.Peer) bool { return (*programmed.Load())[p.Subnet] },
		AutoOffload:  o.AutoCsumOffload && o.TxCsumOffload == OffloadAuto,
		OnResult:     a.state.probeResult,
		OnOffload:    a.state.offloadChanged,
	}
	if sw != nil {
		pc.Offload = sw
	}
	p, err := probe.New(pc)
	if err != nil {
		r.Close()
		fail("prober", err)
		go syncLoop(ctx, keep)
		return
	}
	p.SetPeers(peers)
	a.state.update(func(s *state) { s.prober, s.probeNote = p, "" })
	a.log.Info("probing peers", "overlay_addr", t.own, "responder", t.respond, "port", o.ProbePort,
		"interval", o.ProbeInterval, "rate", o.ProbeRate, "mtu", pc.MTU, "auto_csum_offload", pc.AutoOffload)
	go func() {
		if err := r.Serve(ctx); err != nil && ctx.Err() == nil {
			a.log.Error("probe responder stopped", "err", err)
		}
	}()
	go func() {
		if err := p.Run(ctx); err != nil {
			fail("prober stopped", err)
		}
	}()
	go syncLoop(ctx, func() {
		if keep != nil {
			keep()
		}
		next, prog := t.probePeers(be.Status())
		programmed.Store(&prog)
		if !slices.Equal(next, peers) {
			peers = next
			p.SetPeers(peers)
		}
	})
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
// records the setting for the status report.
//
// Equivalent to: `ethtool -K flannel.1 tx on|off`.
func (a *Agent) offloadKeeper(sw probe.OffloadSwitch, on bool) func() {
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
		a.state.update(func(s *state) { s.offloadFixed = &st })
	}
}
