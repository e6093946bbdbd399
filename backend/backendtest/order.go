package backendtest

import (
	"net"
	"net/netip"
	"sync"
	"syscall"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/netagent/netagent/backend"
)

// Order watches, on one netlink socket and so in the kernel's own order,
// the routes, neighbours and fdb entries added in a namespace, and counts
// the routes of the backends (backend.RouteProtocol) via an onlink
// gateway that arrived before the gateway's permanent neighbour, or
// before the fdb entry of that neighbour's MAC (docs/compatibility.md
// §5.2). Routes via a gateway that is not a neighbour of the device
// (host-gw, direct routing) are not counted.
type Order struct {
	mu     sync.Mutex
	neighs map[netip.Addr]string // permanent neighbour -> MAC
	fdbs   map[string]bool       // MACs with a permanent fdb entry
	routes map[netip.Prefix]bool // routes seen, true when in order
	early  []netip.Prefix
	err    error
	wake   chan struct{}
}

// WatchOrder starts an Order in namespace ns (netns.None(): the current
// one) until stop is closed. The socket's receive buffer holds a cold
// start's notifications should the reader fall behind; a lost
// notification (ENOBUFS) is reported by Err.
func WatchOrder(ns netns.NsHandle, stop <-chan struct{}) (*Order, error) {
	s, err := nl.SubscribeAt(ns, netns.None(), unix.NETLINK_ROUTE,
		unix.RTNLGRP_IPV4_ROUTE, unix.RTNLGRP_IPV6_ROUTE, unix.RTNLGRP_NEIGH)
	if err != nil {
		return nil, err
	}
	if err := s.SetReceiveBufferSize(32<<20, true); err != nil {
		s.Close()
		return nil, err
	}
	o := &Order{neighs: map[netip.Addr]string{}, fdbs: map[string]bool{}, routes: map[netip.Prefix]bool{},
		wake: make(chan struct{}, 1)}
	go func() {
		<-stop
		s.Close()
	}()
	go func() {
		for {
			msgs, _, err := s.Receive()
			if err != nil {
				select {
				case <-stop:
				default:
					o.mu.Lock()
					o.err = err
					o.mu.Unlock()
					o.signal()
				}
				return
			}
			for _, m := range msgs {
				o.take(m)
			}
		}
	}()
	return o, nil
}

func (o *Order) take(m syscall.NetlinkMessage) {
	o.mu.Lock()
	defer o.mu.Unlock()
	defer o.signal()
	switch m.Header.Type {
	case unix.RTM_NEWNEIGH:
		n, err := netlink.NeighDeserialize(m.Data)
		if err != nil || n.State&netlink.NUD_PERMANENT == 0 || len(n.HardwareAddr) != 6 {
			return
		}
		if n.Family == syscall.AF_BRIDGE {
			o.fdbs[n.HardwareAddr.String()] = true
		} else if a, ok := netip.AddrFromSlice(n.IP); ok {
			o.neighs[a.Unmap()] = n.HardwareAddr.String()
		}
	case unix.RTM_NEWROUTE:
		msg := nl.DeserializeRtMsg(m.Data)
		if msg.Protocol != uint8(backend.RouteProtocol) || msg.Flags&unix.RTNH_F_ONLINK == 0 {
			return
		}
		attrs, err := nl.ParseRouteAttr(m.Data[msg.Len():])
		if err != nil {
			return
		}
		var dst, gw netip.Addr
		for _, a := range attrs {
			switch a.Attr.Type {
			case unix.RTA_DST:
				dst, _ = netip.AddrFromSlice(a.Value)
			case unix.RTA_GATEWAY:
				gw, _ = netip.AddrFromSlice(net.IP(a.Value))
			}
		}
		if !dst.IsValid() || !gw.IsValid() {
			return
		}
		p := netip.PrefixFrom(dst.Unmap(), int(msg.Dst_len))
		if _, seen := o.routes[p]; seen {
			return
		}
		mac, ok := o.neighs[gw.Unmap()]
		inOrder := ok && o.fdbs[mac]
		o.routes[p] = inOrder
		if !inOrder {
			o.early = append(o.early, p)
		}
	}
}

func (o *Order) signal() {
	select {
	case o.wake <- struct{}{}:
	default:
	}
}

// Routes returns how many routes were counted, and which of them came
// before their neighbour or fdb entry.
func (o *Order) Routes() (n int, early []netip.Prefix) {
	o.mu.Lock()
	defer o.mu.Unlock()
	return len(o.routes), append([]netip.Prefix(nil), o.early...)
}

// Err is the error that ended the watch (a lost notification), or nil.
func (o *Order) Err() error {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.err
}

// Wake is signalled (without blocking) after each notification, and when
// the watch ends with an error.
func (o *Order) Wake() <-chan struct{} { return o.wake }
