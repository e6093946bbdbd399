package dataplane

import (
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
// a time over the handle, in order. Many are batched on two sockets in
// parallel, the routes on one, the neighbours and fdb entries on the
// other: routes are most of the kernel's work (it compares each new IPv4
// route's next hop with those of every route already on the device), and
// a third socket would only add a third contender for the kernel's rtnl
// lock. A peer's route is sent only once its neighbour and fdb entry are
// in (docs/compatibility.md §5.2): the routes' socket sends a chunk when
// the other has finished the chunks that install those of its peers, so
// the two still overlap, one chunk apart.
func (e *Engine) execPhase(ops []op) []error {
	errs := make([]error, len(ops))
	if len(ops) < parallelMin {
		for i := range ops {
			errs[i] = do(e.cfg.Handle, &ops[i])
		}
		return errs
	}
	var routes, others []int
	for i := range ops {
		if ops[i].kind == kindRoute {
			routes = append(routes, i)
		} else {
			others = append(others, i)
		}
	}
	rb, err := newBatcher(e.cfg.Netns)
	if err != nil {
		for i := range ops {
			errs[i] = do(e.cfg.Handle, &ops[i])
		}
		return errs
	}
	defer rb.close()
	ob, err := newBatcher(e.cfg.Netns)
	if err != nil {
		// One socket: the others first, then the routes.
		rb.run(ops, others, errs, nil, nil)
		rb.run(ops, routes, errs, nil, nil)
		return errs
	}
	defer ob.close()
	// need[peer] is how many of others must be done before the peer's
	// route may go.
	need := make(map[netip.Prefix]int)
	for j, i := range others {
		if !ops[i].del && ops[i].peer.IsValid() {
			need[ops[i].peer] = j + 1
		}
	}
	pr := newProgress()
	var wg sync.WaitGroup
	wg.Go(func() {
		defer pr.set(len(others))
		ob.run(ops, others, errs, nil, pr.set)
	})
	rb.run(ops, routes, errs, func(chunk []int) {
		gate := 0
		for _, i := range chunk {
			if !ops[i].del {
				gate = max(gate, need[ops[i].peer])
			}
		}
		pr.wait(gate)
	}, nil)
	wg.Wait()
	return errs
}

// progress is how many ops a batcher has finished, for another to wait on.
type progress struct {
	mu   sync.Mutex
	cond *sync.Cond
	done int
}

func newProgress() *progress {
	p := &progress{}
	p.cond = sync.NewCond(&p.mu)
	return p
}

func (p *progress) set(n int) {
	p.mu.Lock()
	p.done = max(p.done, n)
	p.mu.Unlock()
	p.cond.Broadcast()
}

func (p *progress) wait(n int) {
	p.mu.Lock()
	for p.done < n {
		p.cond.Wait()
	}
	p.mu.Unlock()
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
// host-gw peer), the route last, and no route over a foreign one (see
// ownsRoute).
func (e *Engine) peerOps(p *peer) []op {
	if !p.reachable || p.mode == backend.ModeWireGuard {
		return nil
	}
	var ops []op
	if p.mode == backend.ModeVXLAN {
		// Neighbour and fdb entry first, so that the route never points
		// at a gateway the device cannot resolve (§5.2).
		ops = append(ops,
			op{kind: kindNeigh, neigh: neighEntry(e.devIndex, p.subnet.Addr(), p.mac), peer: p.subnet},
			op{kind: kindFDB, neigh: fdbEntry(e.devIndex, p.mac, p.publicIP), peer: p.subnet})
	}
	if _, held := e.heldBy(e.foreign, p); held {
		return ops
	}
	return append(ops, op{kind: kindRoute, route: e.wantRoute(p), peer: p.subnet})
}

// removeOps returns the ops that take away what a was for subnet s and
// next (nil: the peer is gone) no longer needs.
func (e *Engine) removeOps(s netip.Prefix, a applied, next *peer) []op {
	was := a.from
	if was == nil || was.mode == backend.ModeWireGuard {
		return nil
	}
	var ops []op
	nextInstalled := next != nil && next.reachable
	// An IPv6 route moving to another device is deleted first (see op.pre).
	moved := nextInstalled && e.v6() &&
		(was.mode != next.mode || (was.mode == backend.ModeVXLAN && a.devIndex != e.devIndex))
	if !nextInstalled || moved {
		ops = append(ops, op{kind: kindRoute, del: true, peer: s, pre: moved, route: &netlink.Route{
			Dst: prefixNet(s), Protocol: backend.RouteProtocol, Table: syscall.RT_TABLE_MAIN,
		}})
	}
	if was.mode != backend.ModeVXLAN {
		return ops
	}
	stillVXLAN := nextInstalled && next.mode == backend.ModeVXLAN && a.devIndex == e.devIndex
	if !stillVXLAN {
		ops = append(ops, op{kind: kindNeigh, del: true, peer: s, neigh: neighEntry(a.devIndex, s.Addr(), nil)})
	}
	if !stillVXLAN || !macEqual(was.mac, next.mac) {
		// The MAC may have moved to another peer meanwhile: leave it.
		if owner := e.fdbOwner([6]byte(was.mac)); owner == nil || owner.subnet == s {
			ops = append(ops, op{kind: kindFDB, del: true, peer: s, neigh: fdbEntry(a.devIndex, was.mac, was.publicIP)})
		}
	}
	return ops
}

// settle records the outcome of programming p; e.mu is held. Status's
// peers are built again only when what they show changed: a resync pass
// that finds everything in place leaves them (and whoever compares them,
// the probers' peer lists) as they were.
func (e *Engine) settle(p *peer, err error) {
	shown := struct {
		programmed bool
		lastErr    string
	}{p.programmed, p.lastErr}
	defer func() {
		if p.programmed != shown.programmed || p.lastErr != shown.lastErr {
			e.peersGen++
		}
	}()
	switch {
	case err != nil:
		p.programmed = false
		p.lastErr = err.Error()
		// What is in the kernel is unknown: the next pass finds out.
		p.applied = applied{from: p, devIndex: e.devIndex}
	case !p.reachable:
		p.programmed = false
		p.since = time.Time{}
		p.lastErr = fmt.Sprintf("public IP %s is not on a directly connected subnet of %s", p.publicIP, e.cfg.Ext.Name)
		p.applied = applied{}
	default:
		if !p.since.IsZero() {
			e.counters.EventLatency.Observe(time.Since(p.since))
			p.since = time.Time{}
		}
		p.programmed = true
		p.lastErr = ""
		p.applied = applied{from: p, devIndex: e.devIndex}
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
