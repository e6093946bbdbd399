package dataplane

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"syscall"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/netagent/netagent/backend"
)

// Kinds of kernel objects, as counted in backend.Counters.Repairs.
const (
	kindRoute   = "route"
	kindNeigh   = "neigh"
	kindFDB     = "fdb"
	kindDevice  = "device"
	kindAddress = "address"
)

// parallelMin is the number of operations from which they are batched,
// on several netlink sockets in parallel (see execPhase).
const parallelMin = 64

// op is one netlink request.
type op struct {
	kind  string
	del   bool
	route *netlink.Route
	neigh *netlink.Neigh
	// peer is the subnet the op is for; invalid for pruning orphans.
	peer netip.Prefix
	// repair is set when the op fixes something that had been programmed.
	repair bool
	// pre runs the op before all others of its exec: an IPv6 route
	// deleted so that its replacement on another device is accepted (the
	// kernel refuses an onlink IPv6 route whose gateway is covered by a
	// route on another device).
	pre bool
}

func (o *op) String() string {
	verb := "replace"
	if o.del {
		verb = "delete"
	}
	switch o.kind {
	case kindRoute:
		return fmt.Sprintf("%s route %s", verb, o.route.Dst)
	case kindNeigh:
		return fmt.Sprintf("%s neighbour %s", verb, o.neigh.IP)
	default:
		return fmt.Sprintf("%s fdb %s dst %s", verb, o.neigh.HardwareAddr, o.neigh.IP)
	}
}

// do runs one op. Deleting what is already gone is not an error.
//
// Equivalent to: `ip route replace|del ...`, `ip neigh replace|del ...`,
// `bridge fdb replace|del ...`.
func do(h *netlink.Handle, o *op) error {
	var err error
	switch {
	case o.route != nil && o.del:
		err = h.RouteDel(o.route)
	case o.route != nil:
		err = h.RouteReplace(o.route)
	case o.del:
		err = h.NeighDel(o.neigh)
	default:
		err = h.NeighSet(o.neigh)
	}
	if o.del && backend.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("%s: %w", o, err)
	}
	return nil
}

// exec runs ops and returns each op's error: the ops marked pre first,
// then the others (see execPhase).
func (e *Engine) exec(ops []op) []error {
	var pre, rest []int
	for i := range ops {
		if ops[i].pre {
			pre = append(pre, i)
		} else {
			rest = append(rest, i)
		}
	}
	if len(pre) == 0 {
		return e.execPhase(ops)
	}
	errs := make([]error, len(ops))
	for _, idx := range [][]int{pre, rest} {
		phase := make([]op, len(idx))
		for j, i := range idx {
			phase[j] = ops[i]
		}
		for j, err := range e.execPhase(phase) {
			errs[idx[j]] = err
		}
	}
	return errs
}

// execPhase runs ops and returns each op's error. Few ops go one request at
// a time over the handle; many are batched on two sockets in parallel, the
// routes on one, the neighbours and fdb entries on the other (the ops all
// touch distinct keys, so their order does not matter). Routes are most of
// the kernel's work (it compares each new IPv4 route's next hop with
// those of every route already on the device), so they start at once on
// a socket of their own, and the rest is done meanwhile; a third socket
// would only add a third contender for the kernel's rtnl lock.
func (e *Engine) execPhase(ops []op) []error {
	errs := make([]error, len(ops))
	if len(ops) < parallelMin {
		for i := range ops {
			errs[i] = do(e.cfg.Handle, &ops[i])
		}
		return errs
	}
	var byKind [2][]int
	for i := range ops {
		k := 0
		if ops[i].kind != kindRoute {
			k = 1
		}
		byKind[k] = append(byKind[k], i)
	}
	var wg sync.WaitGroup
	var unbatched []int
	for _, idx := range byKind {
		if len(idx) == 0 {
			continue
		}
		bt, err := newBatcher(e.cfg.Netns)
		if err != nil {
			unbatched = append(unbatched, idx...)
			continue
		}
		wg.Go(func() {
			defer bt.close()
			bt.run(ops, idx, errs)
		})
	}
	for _, i := range unbatched {
		errs[i] = do(e.cfg.Handle, &ops[i])
	}
	wg.Wait()
	return errs
}

// wantRoute is the route the peer needs. Equivalent to
// `ip route replace <subnet> via <subnet.addr> dev flannel.N onlink proto 78`
// (vxlan) or `ip route replace <subnet> via <PublicIP> dev <ext> proto 78`.
func (e *Engine) wantRoute(p *peer) *netlink.Route {
	r := &netlink.Route{
		Dst:      prefixNet(p.subnet),
		Protocol: backend.RouteProtocol,
		Table:    syscall.RT_TABLE_MAIN,
	}
	if p.mode == backend.ModeVXLAN {
		r.LinkIndex = e.devIndex
		r.Gw = net.IP(p.subnet.Addr().AsSlice())
		r.Flags = int(netlink.FLAG_ONLINK)
	} else {
		r.LinkIndex = e.cfg.Ext.Index
		r.Gw = net.IP(p.publicIP.AsSlice())
	}
	return r
}

// neighEntry is `<subnet.addr> lladdr <mac> dev flannel.N nud permanent`.
func neighEntry(dev int, ip netip.Addr, mac net.HardwareAddr) *netlink.Neigh {
	family := syscall.AF_INET
	if !ip.Is4() {
		family = syscall.AF_INET6
	}
	return &netlink.Neigh{
		LinkIndex:    dev,
		Family:       family,
		State:        netlink.NUD_PERMANENT,
		Type:         syscall.RTN_UNICAST,
		IP:           net.IP(ip.AsSlice()),
		HardwareAddr: mac,
	}
}

// fdbEntry is `<mac> dev flannel.N dst <PublicIP> self permanent`.
func fdbEntry(dev int, mac net.HardwareAddr, dst netip.Addr) *netlink.Neigh {
	return &netlink.Neigh{
		LinkIndex:    dev,
		Family:       syscall.AF_BRIDGE,
		State:        netlink.NUD_PERMANENT,
		Flags:        netlink.NTF_SELF,
		IP:           net.IP(dst.AsSlice()),
		HardwareAddr: mac,
	}
}

// peerOps returns the ops that install p (nothing for an unreachable
// host-gw peer; no route over a foreign one, see ownsRoute).
func (e *Engine) peerOps(p *peer) []op {
	if !p.reachable {
		return nil
	}
	var ops []op
	if _, held := e.heldBy(e.foreign, p); !held {
		ops = append(ops, op{kind: kindRoute, route: e.wantRoute(p), peer: p.subnet})
	}
	if p.mode == backend.ModeVXLAN {
		ops = append(ops,
			op{kind: kindNeigh, neigh: neighEntry(e.devIndex, p.subnet.Addr(), p.mac), peer: p.subnet},
			op{kind: kindFDB, neigh: fdbEntry(e.devIndex, p.mac, p.publicIP), peer: p.subnet})
	}
	return ops
}

// removeOps returns the ops that take away what a was for subnet s and
// next (nil: the peer is gone) no longer needs.
func (e *Engine) removeOps(s netip.Prefix, a *applied, next *peer) []op {
	if a == nil {
		return nil
	}
	var ops []op
	nextInstalled := next != nil && next.reachable
	// An IPv6 route moving to another device is deleted first (see op.pre).
	moved := nextInstalled && e.v6() &&
		(a.mode != next.mode || (a.mode == backend.ModeVXLAN && a.devIndex != e.devIndex))
	if !nextInstalled || moved {
		ops = append(ops, op{kind: kindRoute, del: true, peer: s, pre: moved, route: &netlink.Route{
			Dst: prefixNet(s), Protocol: backend.RouteProtocol, Table: syscall.RT_TABLE_MAIN,
		}})
	}
	if a.mode != backend.ModeVXLAN {
		return ops
	}
	stillVXLAN := nextInstalled && next.mode == backend.ModeVXLAN && a.devIndex == e.devIndex
	if !stillVXLAN {
		ops = append(ops, op{kind: kindNeigh, del: true, peer: s, neigh: neighEntry(a.devIndex, s.Addr(), nil)})
	}
	if !stillVXLAN || !macEqual(a.mac, next.mac) {
		// The MAC may have moved to another peer meanwhile: leave it.
		if owner, ok := e.byMAC[[6]byte(a.mac)]; !ok || owner == s {
			ops = append(ops, op{kind: kindFDB, del: true, peer: s, neigh: fdbEntry(a.devIndex, a.mac, a.publicIP)})
		}
	}
	return ops
}

// applyPeer applies one lease event: old is the previous desired state
// (nil: none), p the new one (nil: removed). Its cost does not depend on
// the number of peers.
func (e *Engine) applyPeer(s netip.Prefix, old, p *peer) {
	var a *applied
	if old != nil {
		a = old.applied
	}
	ops := e.removeOps(s, a, p)
	if p != nil {
		ops = append(ops, e.peerOps(p)...)
	}
	e.logOps(s, ops)
	errs := e.exec(ops)
	err := errors.Join(errs...)
	e.mu.Lock()
	e.countErrors(errs)
	if p != nil {
		var conflict error
		if p.reachable {
			conflict = e.holdForeign(p)
		}
		e.settle(p, errors.Join(err, conflict))
	}
	e.mu.Unlock()
	if err != nil {
		e.log.Warn("programming peer failed; the next pass retries", "lease", leaseName(s, p), "err", err)
	}
}

// settle records the outcome of programming p; e.mu is held.
func (e *Engine) settle(p *peer, err error) {
	e.peersGen++
	switch {
	case err != nil:
		p.programmed = false
		p.lastErr = err.Error()
		// What is in the kernel is unknown: the next pass finds out.
		p.applied = &applied{mode: p.mode, publicIP: p.publicIP, mac: p.mac, devIndex: e.devIndex}
	case !p.reachable:
		p.programmed = false
		p.since = time.Time{}
		p.lastErr = fmt.Sprintf("public IP %s is not on a directly connected subnet of %s", p.publicIP, e.cfg.Ext.Name)
		p.applied = nil
	default:
		if !p.since.IsZero() {
			e.counters.EventLatency.Observe(time.Since(p.since))
			p.since = time.Time{}
		}
		p.programmed = true
		p.lastErr = ""
		p.applied = &applied{mode: p.mode, publicIP: p.publicIP, mac: p.mac, devIndex: e.devIndex}
	}
}

func (e *Engine) countErrors(errs []error) {
	for _, err := range errs {
		if err != nil {
			e.counters.NetlinkErrors++
		}
	}
}

func leaseName(s netip.Prefix, p *peer) string {
	if p != nil {
		return p.key
	}
	return s.String()
}

func prefixNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: net.IP(p.Addr().AsSlice()), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}

func macEqual(a, b net.HardwareAddr) bool { return string(a) == string(b) }
