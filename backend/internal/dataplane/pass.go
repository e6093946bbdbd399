package dataplane

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"syscall"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/netagent/netagent/backend"
)

// pass is one full reconcile: device, external subnets, then every route,
// neighbour and fdb entry diffed against the kernel both ways. It returns
// the joined errors of what could not be fixed.
func (e *Engine) pass() error {
	var errs []error
	devErr := error(nil)
	switch {
	case e.isVXLAN():
		devErr = e.ensureDevice()
	case e.isTunnel():
		devErr = e.ensureTunnel()
	}
	if devErr != nil {
		errs = append(errs, devErr)
	}
	if err := e.refreshExtNets(); err != nil {
		errs = append(errs, err)
	}

	kernel, err := e.dump()
	if err != nil {
		errs = append(errs, err)
		e.finishPass(nil, nil, nil, errs)
		return errors.Join(errs...)
	}

	ops := make([]op, 0, 3*len(e.peers))
	for _, p := range e.peers {
		if p.mode == backend.ModeVXLAN && devErr != nil {
			continue
		}
		ops = e.diffPeer(ops, p, kernel)
	}
	if e.isTunnel() && devErr == nil {
		ops = e.tunnelRouteOps(ops, kernel)
	}
	ops = append(ops, e.orphans(kernel)...)
	ops = e.holdRepairs(ops)
	e.logOps(netip.Prefix{}, ops)
	opErrs := e.exec(ops)
	errs = append(errs, opErrs...)
	e.tunnelFailed = nil
	if e.isTunnel() && devErr == nil {
		if err := e.syncTunnel(); err != nil {
			errs = append(errs, err)
		}
	}
	e.foreign = kernel.foreign
	e.finishPass(ops, opErrs, e.heldPeers(), nil)
	if devErr != nil {
		e.mu.Lock()
		e.peersGen++
		for _, p := range e.peers {
			if p.mode == backend.ModeVXLAN || p.mode == backend.ModeWireGuard {
				p.programmed, p.lastErr = false, devErr.Error()
			}
		}
		e.mu.Unlock()
	}
	return errors.Join(errs...)
}

// kernelState is what a pass found in the kernel.
type kernelState struct {
	routes map[netip.Prefix]*netlink.Route
	// foreign holds the routes over prefixes of the network that are
	// not the engine's (see ownsRoute).
	foreign map[netip.Prefix]*netlink.Route
	neighs  map[netip.Addr]*netlink.Neigh
	fdbs    map[[6]byte]*netlink.Neigh
}

// dump reads the main table's routes of the engine's family, sorted into
// its own and foreign ones over prefixes of its network (see ownsRoute),
// and the neighbours and fdb entries of its device.
//
// Equivalent to: `ip [-6] route show table main`, `ip [-6] neigh
// show dev flannel.N`, `bridge fdb show dev flannel.N`.
func (e *Engine) dump() (*kernelState, error) {
	h := e.cfg.Handle
	k := &kernelState{}
	routes, err := backend.RetryDump(func() ([]netlink.Route, error) {
		return h.RouteListFiltered(e.nlFamily(), &netlink.Route{Table: syscall.RT_TABLE_MAIN}, netlink.RT_FILTER_TABLE)
	})
	if err != nil {
		return nil, fmt.Errorf("list routes: %w", err)
	}
	k.routes = make(map[netip.Prefix]*netlink.Route, len(routes))
	k.foreign = make(map[netip.Prefix]*netlink.Route)
	for i := range routes {
		r := &routes[i]
		if e.ownsRoute(r) {
			if p, ok := ipNetPrefix(r.Dst); ok {
				k.routes[p] = r
			}
		} else if p, ok := e.foreignKey(r); ok {
			k.foreign[p] = r
		}
	}
	if e.devIndex == 0 || e.isTunnel() {
		return k, nil
	}
	neighs, err := backend.RetryDump(func() ([]netlink.Neigh, error) { return h.NeighList(e.devIndex, e.nlFamily()) })
	if err != nil {
		return nil, fmt.Errorf("list neighbours: %w", err)
	}
	k.neighs = make(map[netip.Addr]*netlink.Neigh, len(neighs))
	for i := range neighs {
		if ip, ok := netip.AddrFromSlice(neighs[i].IP); ok {
			k.neighs[ip.Unmap()] = &neighs[i]
		}
	}
	fdbs, err := backend.RetryDump(func() ([]netlink.Neigh, error) { return h.NeighList(e.devIndex, syscall.AF_BRIDGE) })
	if err != nil {
		return nil, fmt.Errorf("list fdb: %w", err)
	}
	k.fdbs = make(map[[6]byte]*netlink.Neigh, len(fdbs))
	for i := range fdbs {
		if len(fdbs[i].HardwareAddr) == 6 {
			k.fdbs[[6]byte(fdbs[i].HardwareAddr)] = &fdbs[i]
		}
	}
	return k, nil
}

// diffPeer appends to ops those that make the kernel hold p's entries,
// the route after the neighbour and fdb entry (§5.2), and marks the
// entries it accounts for as seen (deleting them from k).
func (e *Engine) diffPeer(ops []op, p *peer, k *kernelState) []op {
	repair := p.programmed || p.leftBroken
	if !p.reachable || p.mode == backend.ModeWireGuard {
		// A tunnel's peers are reached through the overlay route
		// (tunnelRouteOps) and programmed by the tunnel.
		return ops
	}
	var route []op
	want := e.wantRoute(p)
	// A foreign route over the prefix is not replaced (unless it is
	// the wanted one but for its protocol); an own route beside it
	// (another metric) is pruned as unwanted, so that the foreign one is
	// the one used.
	if _, held := e.heldBy(k.foreign, p); !held {
		if r := k.routes[p.subnet]; r == nil || !routeMatches(r, want) {
			if r != nil && e.v6() && r.LinkIndex != want.LinkIndex {
				// See op.pre.
				ops = append(ops, op{kind: kindRoute, del: true, pre: true, route: r, peer: p.subnet})
			}
			route = append(route, op{kind: kindRoute, route: want, peer: p.subnet, repair: repair})
		}
		delete(k.routes, p.subnet)
	}
	if p.mode != backend.ModeVXLAN {
		return append(ops, route...)
	}
	gw := p.subnet.Addr()
	if n := k.neighs[gw]; n == nil || n.State != netlink.NUD_PERMANENT || !macEqual(n.HardwareAddr, p.mac) {
		ops = append(ops, op{kind: kindNeigh, neigh: neighEntry(e.devIndex, gw, p.mac), peer: p.subnet, repair: repair})
	}
	delete(k.neighs, gw)
	key := [6]byte(p.mac)
	if e.byMAC[key] == p.subnet {
		if f := k.fdbs[key]; f == nil || f.State != netlink.NUD_PERMANENT || !ipEqual(f.IP, p.publicIP) {
			ops = append(ops, op{kind: kindFDB, neigh: fdbEntry(e.devIndex, p.mac, p.publicIP), peer: p.subnet, repair: repair})
		}
		delete(k.fdbs, key)
	}
	return append(ops, route...)
}

// orphans returns deletions of what is the engine's own in the kernel but
// wanted by no peer (see ownsRoute): its routes, permanent neighbours for
// addresses of its network and unicast permanent fdb entries with a
// destination on the device.
func (e *Engine) orphans(k *kernelState) []op {
	var ops []op
	for _, r := range k.routes {
		ops = append(ops, op{kind: kindRoute, del: true, route: r, repair: e.firstDone})
	}
	for ip, n := range k.neighs {
		if n.State == netlink.NUD_PERMANENT && e.ownsNeighAddr(ip) {
			ops = append(ops, op{kind: kindNeigh, del: true, neigh: n, repair: e.firstDone})
		}
	}
	for _, f := range k.fdbs {
		mac := f.HardwareAddr
		if f.State == netlink.NUD_PERMANENT && f.IP != nil && mac[0]&1 == 0 && !isZero(mac) {
			ops = append(ops, op{kind: kindFDB, del: true, neigh: f, repair: e.firstDone})
		}
	}
	return ops
}

// finishPass records the outcome of a pass's ops per peer and in the
// counters.
func (e *Engine) finishPass(ops []op, opErrs []error, held map[netip.Prefix]string, fatal []error) {
	failed := make(map[netip.Prefix]error)
	for i := range ops {
		if opErrs[i] != nil && ops[i].peer.IsValid() {
			failed[ops[i].peer] = errors.Join(failed[ops[i].peer], opErrs[i])
		}
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	e.counters.Passes++
	e.lastPass = time.Now()
	if e.counters.Passes == 1 {
		close(e.ready)
	}
	e.countErrors(opErrs)
	for i := range ops {
		if ops[i].repair && opErrs[i] == nil {
			e.counters.Repairs[ops[i].kind]++
		}
	}
	if fatal != nil {
		return
	}
	e.noteConflicts(held)
	for _, p := range e.peers {
		prev := p.lastErr
		broken := e.unrepaired[p.subnet]
		e.settle(p, errors.Join(failed[p.subnet], broken, e.conflictErr(p.subnet), e.tunnelFailed[p.subnet]))
		p.leftBroken = broken != nil
		if !p.reachable && prev != p.lastErr {
			e.log.Warn("peer not programmed", "lease", p.key, "public_ip", p.publicIP, "err", p.lastErr)
		}
	}
	e.broken = e.unrepaired
	e.firstDone = true
}

// holdRepairs returns ops without the repairs when Config.NoRepair is
// set, and records in e.unrepaired, per peer, what was left as found.
func (e *Engine) holdRepairs(ops []op) []op {
	e.unrepaired = nil
	if !e.cfg.NoRepair {
		return ops
	}
	kept := ops[:0]
	var held []string
	for _, o := range ops {
		if !o.repair {
			kept = append(kept, o)
			continue
		}
		held = append(held, o.String())
		if o.peer.IsValid() {
			if e.unrepaired == nil {
				e.unrepaired = make(map[netip.Prefix]error)
			}
			e.unrepaired[o.peer] = errors.Join(e.unrepaired[o.peer], fmt.Errorf("repair disabled: would %s", o.String()))
		}
	}
	if len(held) > 0 {
		e.log.Warn("kernel entries missing or wrong; repair disabled, left as found", "would", held)
	}
	return kept
}

// refreshExtNets reads the external interface's subnets of the engine's
// family (link-local ones aside) and re-decides each peer's mode from them.
//
// Equivalent to: `ip -4|-6 addr show dev <ext>`.
func (e *Engine) refreshExtNets() error {
	if !e.cfg.DirectRouting && e.hasDevice() {
		return nil
	}
	link := &netlink.Device{LinkAttrs: netlink.LinkAttrs{Index: e.cfg.Ext.Index}}
	addrs, err := backend.RetryDump(func() ([]netlink.Addr, error) { return e.cfg.Handle.AddrList(link, e.nlFamily()) })
	if err != nil {
		return fmt.Errorf("list addresses of %s: %w", e.cfg.Ext.Name, err)
	}
	nets := make([]netip.Prefix, 0, len(addrs))
	for _, a := range addrs {
		ip, ok := netip.AddrFromSlice(a.IP)
		if !ok || ip.IsLinkLocalUnicast() {
			continue
		}
		ones, _ := a.Mask.Size()
		nets = append(nets, netip.PrefixFrom(ip.Unmap(), ones))
	}
	e.extNets = nets
	for s, p := range e.peers {
		np := *p
		e.decideMode(&np)
		if np.mode != p.mode || np.reachable != p.reachable {
			e.log.Info("peer route mode changed", "lease", p.key, "mode", np.mode, "reachable", np.reachable)
			if cl := e.table.get(p.key); cl != nil && cl.peer == p {
				cl.peer = &np
			}
			e.setPeer(s, &np)
		}
	}
	return nil
}

func routeMatches(have, want *netlink.Route) bool {
	return have.LinkIndex == want.LinkIndex && have.Gw.Equal(want.Gw) &&
		have.Flags&int(netlink.FLAG_ONLINK) == want.Flags&int(netlink.FLAG_ONLINK) &&
		have.Protocol == want.Protocol
}

func ipNetPrefix(n *net.IPNet) (netip.Prefix, bool) {
	if n == nil {
		return netip.Prefix{}, false
	}
	ip, ok := netip.AddrFromSlice(n.IP)
	if !ok {
		return netip.Prefix{}, false
	}
	ones, _ := n.Mask.Size()
	return netip.PrefixFrom(ip.Unmap(), ones), true
}

func ipEqual(ip net.IP, a netip.Addr) bool {
	b, ok := netip.AddrFromSlice(ip)
	return ok && b.Unmap() == a
}

func isZero(mac net.HardwareAddr) bool {
	for _, b := range mac {
		if b != 0 {
			return false
		}
	}
	return true
}

// logOps logs, at debug level, the kernel changes a full pass (lease
// invalid) or the event of one lease is about to make: the first few of
// them and how many there are. Below debug level it costs nothing.
func (e *Engine) logOps(lease netip.Prefix, ops []op) {
	if len(ops) == 0 || !e.log.Enabled(context.Background(), slog.LevelDebug) {
		return
	}
	what := "full pass"
	if lease.IsValid() {
		what = "lease " + lease.String()
	}
	const shown = 8
	desc := make([]string, 0, min(len(ops), shown))
	for i := range ops[:min(len(ops), shown)] {
		desc = append(desc, ops[i].String())
	}
	e.log.Debug("programming", "pass", what, "ops", len(ops), "first", strings.Join(desc, "; "))
}
