package dataplane

import (
	"fmt"
	"net"
	"net/netip"
	"slices"
	"syscall"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/netagent/netagent/backend"
)

// A pass reads the kernel's tables with streamed dumps: each entry is
// reduced, as its message arrives, to what the diff compares and what
// deleting it takes. With 5,000 peers the dumps are 15,000 entries; kept
// as netlink.Route and netlink.Neigh values (with the receive buffers
// their addresses point into) they were ~20 MB of heap alive during every
// pass, which set the agent's peak memory.

// kernelState is what a pass found in the kernel.
type kernelState struct {
	routes map[netip.Prefix]kernelRoute
	// foreign holds the routes over prefixes of the network that are
	// not the engine's (see ownsRoute).
	foreign map[netip.Prefix]*netlink.Route
	neighs  map[netip.Addr]kernelNeigh
	fdbs    map[[6]byte]kernelNeigh
}

// kernelRoute is one of the engine's routes as dumped: what routeMatches
// compares and what deleting exactly that route takes, in the widths of
// the kernel's message (rtmsg, RTA_*): 48 bytes, not 80, a route; a pass
// holds one per peer.
type kernelRoute struct {
	gw                     netip.Addr
	link                   int32
	priority, flags, table uint32
	protocol, typ          uint8
	scope                  netlink.Scope
}

func newKernelRoute(r *netlink.Route) kernelRoute {
	k := kernelRoute{link: int32(r.LinkIndex), priority: uint32(r.Priority), flags: uint32(r.Flags),
		protocol: uint8(r.Protocol), table: uint32(r.Table), typ: uint8(r.Type), scope: r.Scope}
	if gw, ok := netip.AddrFromSlice(r.Gw); ok {
		k.gw = gw.Unmap()
	}
	return k
}

// route is the netlink.Route that deletes k, the route over dst.
func (k kernelRoute) route(dst netip.Prefix) *netlink.Route {
	r := &netlink.Route{Dst: prefixNet(dst), LinkIndex: int(k.link), Priority: int(k.priority), Flags: int(k.flags),
		Protocol: netlink.RouteProtocol(k.protocol), Table: int(k.table), Type: int(k.typ), Scope: k.scope}
	if k.gw.IsValid() {
		r.Gw = net.IP(k.gw.AsSlice())
	}
	return r
}

// matches is routeMatches for a dumped route.
func (k kernelRoute) matches(want *netlink.Route) bool {
	return int(k.link) == want.LinkIndex && ipEqual(want.Gw, k.gw) &&
		int(k.flags)&int(netlink.FLAG_ONLINK) == want.Flags&int(netlink.FLAG_ONLINK) &&
		netlink.RouteProtocol(k.protocol) == want.Protocol
}

// kernelNeigh is a neighbour or fdb entry of the device as dumped: its
// address (the fdb entry's destination), link-layer address and state,
// and what deleting it takes, in the widths of the kernel's message
// (ndmsg): 40 bytes, not 64, an entry; a pass holds two per peer.
type kernelNeigh struct {
	ip netip.Addr
	// mac is the link-layer address when it has 6 bytes (macOK).
	mac                [6]byte
	macOK              bool
	family, flags, typ uint8
	state              uint16
}

func newKernelNeigh(n *netlink.Neigh) kernelNeigh {
	k := kernelNeigh{family: uint8(n.Family), state: uint16(n.State), flags: uint8(n.Flags), typ: uint8(n.Type)}
	if ip, ok := netip.AddrFromSlice(n.IP); ok {
		k.ip = ip.Unmap()
	}
	if len(n.HardwareAddr) == 6 {
		k.mac, k.macOK = [6]byte(n.HardwareAddr), true
	}
	return k
}

// hasMAC reports whether the entry's link-layer address is mac.
func (k kernelNeigh) hasMAC(mac net.HardwareAddr) bool {
	return k.macOK && len(mac) == 6 && k.mac == [6]byte(mac)
}

// neigh is the netlink.Neigh that deletes k from device dev.
func (k kernelNeigh) neigh(dev int) *netlink.Neigh {
	n := &netlink.Neigh{LinkIndex: dev, Family: int(k.family), State: int(k.state), Flags: int(k.flags), Type: int(k.typ)}
	if k.ip.IsValid() {
		n.IP = net.IP(k.ip.AsSlice())
	}
	if k.macOK {
		n.HardwareAddr = net.HardwareAddr(k.mac[:])
	}
	return n
}

// dump reads the main table's routes of the engine's family, sorted into
// its own and foreign ones over prefixes of its network (see ownsRoute),
// and the neighbours and fdb entries of its device.
//
// Equivalent to: `ip [-6] route show table main`, `ip [-6] neigh
// show dev flannel.N`, `bridge fdb show dev flannel.N`.
func (e *Engine) dump() (*kernelState, error) {
	k := &kernelState{}
	if _, err := backend.RetryDump(func() (struct{}, error) { return struct{}{}, e.dumpRoutes(k) }); err != nil {
		return nil, fmt.Errorf("list routes: %w", err)
	}
	if e.devIndex == 0 || e.isTunnel() {
		return k, nil
	}
	if _, err := backend.RetryDump(func() (struct{}, error) {
		k.neighs = make(map[netip.Addr]kernelNeigh, len(e.peers))
		return struct{}{}, dumpNeighs(e.cfg.Netns, e.devIndex, e.nlFamily(), func(n kernelNeigh) {
			if n.ip.IsValid() {
				k.neighs[n.ip] = n
			}
		})
	}); err != nil {
		return nil, fmt.Errorf("list neighbours: %w", err)
	}
	if _, err := backend.RetryDump(func() (struct{}, error) {
		k.fdbs = make(map[[6]byte]kernelNeigh, len(e.byMAC))
		return struct{}{}, dumpNeighs(e.cfg.Netns, e.devIndex, syscall.AF_BRIDGE, func(n kernelNeigh) {
			if n.macOK {
				k.fdbs[n.mac] = n
			}
		})
	}); err != nil {
		return nil, fmt.Errorf("list fdb: %w", err)
	}
	return k, nil
}

// dumpRoutes fills k's routes and foreign routes from one dump of the main
// table.
func (e *Engine) dumpRoutes(k *kernelState) error {
	k.routes = make(map[netip.Prefix]kernelRoute, len(e.peers))
	k.foreign = make(map[netip.Prefix]*netlink.Route)
	filter := &netlink.Route{Table: syscall.RT_TABLE_MAIN}
	return e.cfg.Handle.RouteListFilteredIter(e.nlFamily(), filter, netlink.RT_FILTER_TABLE, func(r netlink.Route) bool {
		if e.ownsRoute(&r) {
			if p, ok := ipNetPrefix(r.Dst); ok {
				k.routes[p] = newKernelRoute(&r)
			}
		} else if p, ok := e.foreignKey(&r); ok {
			k.foreign[p] = detachRoute(r)
		}
		return true
	})
}

// detachRoute returns a copy of a dumped route whose addresses no longer
// point into the dump's receive buffer, so that keeping it does not keep
// the buffer.
func detachRoute(r netlink.Route) *netlink.Route {
	if r.Dst != nil {
		r.Dst = &net.IPNet{IP: slices.Clone(r.Dst.IP), Mask: slices.Clone(r.Dst.Mask)}
	}
	r.Gw, r.Src = slices.Clone(r.Gw), slices.Clone(r.Src)
	return &r
}

// dumpNeighs passes each entry of family (AF_BRIDGE: the fdb) on device
// dev in namespace ns to f, as its message arrives. It returns
// netlink.ErrDumpInterrupted when the table changed during the dump.
//
// Equivalent to: `ip neigh show dev DEV` or `bridge fdb show dev DEV`.
func dumpNeighs(ns netns.NsHandle, dev, family int, f func(kernelNeigh)) error {
	if ns == 0 {
		ns = netns.None()
	}
	s, err := nl.GetNetlinkSocketAt(ns, netns.None(), unix.NETLINK_ROUTE)
	if err != nil {
		return err
	}
	defer s.Close()
	if err := s.SetSendTimeout(&nl.SocketTimeoutTv); err != nil {
		return err
	}
	if err := s.SetReceiveTimeout(&nl.SocketTimeoutTv); err != nil {
		return err
	}
	req := nl.NewNetlinkRequest(unix.RTM_GETNEIGH, unix.NLM_F_DUMP)
	req.Sockets = map[int]*nl.SocketHandle{unix.NETLINK_ROUTE: {Socket: s}}
	req.AddData(&netlink.Ndmsg{Family: uint8(family), Index: uint32(dev)})
	return req.ExecuteIter(unix.NETLINK_ROUTE, unix.RTM_NEWNEIGH, func(m []byte) bool {
		n, err := netlink.NeighDeserialize(m)
		// The kernel filters by device only when asked with strict
		// checking: filter here, as netlink's NeighList does.
		if err != nil || n.LinkIndex != dev || n.Family != family {
			return true
		}
		f(newKernelNeigh(n))
		return true
	})
}
