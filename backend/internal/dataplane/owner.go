package dataplane

import (
	"fmt"
	"maps"
	"net/netip"
	"syscall"

	"github.com/vishvananda/netlink"

	"github.com/netagent/netagent/backend"
)

// Ownership (docs/compatibility.md §5.6). Several instances of the agent,
// for different networks, may run on one host, and an administrator may
// hold a peer's prefix with a route of their own; an engine changes only
// what is its own:
//
//   - a route is the engine's when it has backend.RouteProtocol and its
//     destination lies inside the engine's network (Config.Network), or,
//     for vxlan, when it is on the engine's device. Another instance's
//     routes (another network, another device) share the protocol but
//     are never pruned.
//   - a route of the main table whose destination is a peer's subnet but
//     that is not the engine's (another protocol: `ip route replace` by
//     hand, a routing daemon) is foreign: the engine does not replace
//     it, reports the conflict on the peer, and installs its own route
//     once the foreign one is gone. One that forwards exactly as the
//     engine's would (flannel's, on a host moving from flannel) is
//     adopted: replaced by the engine's.
//   - on the engine's VXLAN device, a permanent neighbour is the engine's
//     when its address lies inside the network (the peers' gateways all
//     do); one outside it is foreign and left alone. A unicast permanent
//     fdb entry with a destination is the engine's (the device carries only
//     overlay traffic and the engine installs one for each peer MAC);
//     flood entries (the all-zero MAC) and multicast ones are foreign.

// ownsRoute reports whether r is the engine's own route.
func (e *Engine) ownsRoute(r *netlink.Route) bool {
	if r.Protocol != backend.RouteProtocol || r.Table != syscall.RT_TABLE_MAIN {
		return false
	}
	if e.hasDevice() && e.devIndex != 0 && r.LinkIndex == e.devIndex {
		return true
	}
	n := e.cfg.Network
	if !n.IsValid() {
		// No network to tell instances apart: every route with the
		// protocol, as before instances existed.
		return true
	}
	dst, ok := ipNetPrefix(r.Dst)
	return ok && inside(n, dst)
}

// ownsNeighAddr reports whether a permanent neighbour for ip on the
// engine's device is the engine's.
func (e *Engine) ownsNeighAddr(ip netip.Addr) bool {
	n := e.cfg.Network
	return !n.IsValid() || n.Contains(ip)
}

// inside reports whether p lies inside n.
func inside(n, p netip.Prefix) bool {
	return n.Bits() <= p.Bits() && n.Contains(p.Addr())
}

// foreignKey reports whether a route that is not the engine's may hold a
// peer's prefix: a main-table route of the family whose destination could
// be a peer's subnet.
func (e *Engine) foreignKey(r *netlink.Route) (netip.Prefix, bool) {
	if r.Table != syscall.RT_TABLE_MAIN || (r.Family != 0 && r.Family != e.nlFamily()) || e.ownsRoute(r) {
		return netip.Prefix{}, false
	}
	dst, ok := ipNetPrefix(r.Dst)
	if !ok || dst.Bits() == 0 {
		return netip.Prefix{}, false
	}
	if n := e.cfg.Network; n.IsValid() && !inside(n, dst) {
		return netip.Prefix{}, false
	}
	if e.cfg.SubnetLen > 0 && dst.Bits() != e.cfg.SubnetLen {
		return netip.Prefix{}, false
	}
	return dst, true
}

// describeForeign is how a foreign route is named in status and logs.
func describeForeign(r *netlink.Route) string {
	s := fmt.Sprintf("%s proto %s", r.Dst, r.Protocol)
	if r.Gw != nil {
		s += " via " + r.Gw.String()
	}
	if r.LinkIndex != 0 {
		s += fmt.Sprintf(" dev index %d", r.LinkIndex)
	}
	if r.Type != 0 && r.Type != syscall.RTN_UNICAST {
		s += fmt.Sprintf(" type %d", r.Type)
	}
	return s
}

// trackForeign keeps e.foreign in step with a route notification and
// reports whether it changed a peer's conflict (a pass then settles it).
func (e *Engine) trackForeign(n notification) bool {
	if !n.del && e.ownsRoute(n.route) {
		// The engine's route replaced (adopted) the one there; another
		// at another metric, if any, is found by the next pass's dump.
		if dst, ok := ipNetPrefix(n.route.Dst); ok {
			delete(e.foreign, dst)
		}
		return false
	}
	dst, ok := e.foreignKey(n.route)
	if !ok {
		return false
	}
	_, had := e.foreign[dst]
	if n.del {
		// Another route may still hold the prefix (another metric):
		// the next pass's dump finds it.
		delete(e.foreign, dst)
	} else {
		r := *n.route
		e.foreign[dst] = &r
	}
	p := e.peers[dst]
	return p != nil && (had || !n.del)
}

// foreignConflict is the error a peer whose prefix is held by a foreign
// route reports.
func foreignConflict(desc string) error {
	return fmt.Errorf("prefix held by a route this agent does not own (%s): not replaced; delete it to let the agent route the peer", desc)
}

// noteConflicts logs, once per conflict, the peers whose prefix a foreign
// route holds, and when a conflict ends; e.mu is held.
func (e *Engine) noteConflicts(found map[netip.Prefix]string) {
	if !maps.Equal(found, e.conflicts) {
		// Status shows them.
		e.peersGen++
	}
	for s, desc := range found {
		if e.conflicts[s] != desc {
			e.counters.ForeignRoutes++
			p := e.peers[s]
			e.log.Warn("peer's prefix is held by a route this agent does not own; left for the administrator", "lease", leaseName(s, p), "foreign_route", desc)
		}
	}
	for s := range e.conflicts {
		if _, ok := found[s]; !ok {
			e.log.Info("foreign route over peer's prefix is gone; routing the peer", "subnet", s)
		}
	}
	e.conflicts = found
}

// heldBy says whether a route of foreign holds p's prefix, and describes
// it. A route that forwards as the engine's would (same device, gateway and
// onlink flag; flannel's, or the agent's before protocols marked them) is
// not held: the engine adopts it by replacing it with its own.
func (e *Engine) heldBy(foreign map[netip.Prefix]*netlink.Route, p *peer) (string, bool) {
	r := foreign[p.subnet]
	if r == nil || !p.reachable {
		return "", false
	}
	want := e.wantRoute(p)
	if r.LinkIndex == want.LinkIndex && r.Gw.Equal(want.Gw) &&
		r.Flags&int(netlink.FLAG_ONLINK) == want.Flags&int(netlink.FLAG_ONLINK) &&
		(r.Type == 0 || r.Type == syscall.RTN_UNICAST) {
		return "", false
	}
	return describeForeign(r), true
}

// heldPeers returns the peers whose prefix a foreign route holds, as of
// the last dump or notification.
func (e *Engine) heldPeers() map[netip.Prefix]string {
	held := make(map[netip.Prefix]string)
	for s := range e.foreign {
		if p := e.peers[s]; p != nil {
			if desc, ok := e.heldBy(e.foreign, p); ok {
				held[s] = desc
			}
		}
	}
	return held
}

// conflictErr is the conflict peer s reports, or nil; e.mu is held.
func (e *Engine) conflictErr(s netip.Prefix) error {
	if desc, ok := e.conflicts[s]; ok {
		return foreignConflict(desc)
	}
	return nil
}

// holdForeign records, for a lease event, that a foreign route holds p's
// prefix (when it does) and returns the conflict; e.mu is held.
func (e *Engine) holdForeign(p *peer) error {
	s := p.subnet
	desc, ok := e.heldBy(e.foreign, p)
	if !ok {
		return nil
	}
	if e.conflicts[s] != desc {
		found := maps.Clone(e.conflicts)
		if found == nil {
			found = make(map[netip.Prefix]string)
		}
		found[s] = desc
		e.noteConflicts(found)
	}
	return foreignConflict(desc)
}
