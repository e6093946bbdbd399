package dataplane

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strings"
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
		e.finishPass(nil, nil, errs)
		return errors.Join(errs...)
	}

	// The ops go to the kernel in chunks of whole peers: a cold start's
	// 15,000 ops with their netlink values were ~5 MB of heap held at
	// once, the agent's peak with 5,000 peers. A pass with fewer ops
	// runs them in one exec, as before.
	t := &passTally{failed: make(map[netip.Prefix]error)}
	e.unrepaired = nil
	var ops []op
	for _, p := range e.peers {
		if p.mode == backend.ModeVXLAN && devErr != nil {
			continue
		}
		ops = e.diffPeer(ops, p, kernel)
		if len(ops) >= passChunk {
			errs = append(errs, e.execPass(ops, t)...)
			clear(ops) // let go of the chunk's netlink values
			ops = ops[:0]
		}
	}
	if e.isTunnel() && devErr == nil {
		ops = e.tunnelRouteOps(ops, kernel)
	}
	ops = append(ops, e.orphans(kernel)...)
	errs = append(errs, e.execPass(ops, t)...)
	if len(t.held) > 0 {
		e.log.Warn("kernel entries missing or wrong; repair disabled, left as found", "would", t.held)
	}
	e.tunnelFailed = nil
	if e.isTunnel() && devErr == nil {
		if err := e.syncTunnel(); err != nil {
			errs = append(errs, err)
		}
	}
	e.foreign = kernel.foreign
	e.finishPass(t, e.heldPeers(), nil)
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

// passChunk is the number of ops from which a pass sends what it has
// diffed so far before it diffs more peers.
const passChunk = 2048

// passTally is what a pass's execs did, for finishPass: the errors per
// peer, the netlink errors and the repairs made, and (Config.NoRepair)
// the repairs held back.
type passTally struct {
	failed        map[netip.Prefix]error
	netlinkErrors uint64
	repairs       map[string]uint64
	held          []string
}

// execPass runs one chunk of a pass's ops (without the repairs, with
// Config.NoRepair), tallies them in t and returns their errors.
func (e *Engine) execPass(ops []op, t *passTally) []error {
	ops = e.holdRepairs(ops, t)
	e.logOps(netip.Prefix{}, ops)
	opErrs := e.exec(ops)
	for i := range ops {
		switch {
		case opErrs[i] != nil:
			t.netlinkErrors++
			if ops[i].peer.IsValid() {
				t.failed[ops[i].peer] = errors.Join(t.failed[ops[i].peer], opErrs[i])
			}
		case ops[i].repair:
			if t.repairs == nil {
				t.repairs = make(map[string]uint64)
			}
			t.repairs[ops[i].kind]++
		}
	}
	return opErrs
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
		if r, ok := k.routes[p.subnet]; !ok || !r.matches(want) {
			if ok && e.v6() && int(r.link) != want.LinkIndex {
				// See op.pre.
				ops = append(ops, op{kind: kindRoute, del: true, pre: true, route: r.route(p.subnet), peer: p.subnet})
			}
			route = append(route, op{kind: kindRoute, route: want, peer: p.subnet, repair: repair})
		}
		delete(k.routes, p.subnet)
	}
	if p.mode != backend.ModeVXLAN {
		return append(ops, route...)
	}
	gw := p.subnet.Addr()
	if n, ok := k.neighs[gw]; !ok || n.state != netlink.NUD_PERMANENT || !n.hasMAC(p.mac) {
		ops = append(ops, op{kind: kindNeigh, neigh: neighEntry(e.devIndex, gw, p.mac), peer: p.subnet, repair: repair})
	}
	delete(k.neighs, gw)
	key := [6]byte(p.mac)
	if owner := e.fdbOwner(key); owner != nil && owner.subnet == p.subnet {
		if f, ok := k.fdbs[key]; !ok || f.state != netlink.NUD_PERMANENT || f.ip != p.publicIP {
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
	for dst, r := range k.routes {
		ops = append(ops, op{kind: kindRoute, del: true, route: r.route(dst), repair: e.firstDone})
	}
	for ip, n := range k.neighs {
		if n.state == netlink.NUD_PERMANENT && e.ownsNeighAddr(ip) {
			ops = append(ops, op{kind: kindNeigh, del: true, neigh: n.neigh(e.devIndex), repair: e.firstDone})
		}
	}
	for mac, f := range k.fdbs {
		if f.state == netlink.NUD_PERMANENT && f.ip.IsValid() && mac[0]&1 == 0 && mac != [6]byte{} {
			ops = append(ops, op{kind: kindFDB, del: true, neigh: f.neigh(e.devIndex), repair: e.firstDone})
		}
	}
	return ops
}

// finishPass records the outcome of a pass's ops (t; nil when the pass
// failed before any) per peer and in the counters.
func (e *Engine) finishPass(t *passTally, held map[netip.Prefix]string, fatal []error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.counters.Passes++
	e.lastPass = time.Now()
	if e.counters.Passes == 1 {
		close(e.ready)
	}
	if t != nil {
		e.counters.NetlinkErrors += t.netlinkErrors
		for kind, n := range t.repairs {
			e.counters.Repairs[kind] += n
		}
	}
	if fatal != nil {
		return
	}
	failed := t.failed
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
// set, and records in e.unrepaired, per peer, what was left as found,
// and in t.held what for the log.
func (e *Engine) holdRepairs(ops []op, t *passTally) []op {
	if !e.cfg.NoRepair {
		return ops
	}
	kept := ops[:0]
	for _, o := range ops {
		if !o.repair {
			kept = append(kept, o)
			continue
		}
		t.held = append(t.held, o.String())
		if o.peer.IsValid() {
			if e.unrepaired == nil {
				e.unrepaired = make(map[netip.Prefix]error)
			}
			e.unrepaired[o.peer] = errors.Join(e.unrepaired[o.peer], fmt.Errorf("repair disabled: would %s", o.String()))
		}
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
			if e.table.get(p.key) == p {
				e.table.replace(p, &np)
			} else {
				np.nextInSubnet, np.nextInIdent = nil, nil
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
