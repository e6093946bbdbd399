package dataplane

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"syscall"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/netagent/netagent/backend"
)

// rcvBuf is the receive buffer of the subscription sockets: a cold start
// notifies about every entry programmed.
const rcvBuf = 8 << 20

// notification is one netlink notification, or lost (a subscription
// failed, so anything may have changed).
type notification struct {
	lost  bool
	del   bool
	link  *netlink.LinkUpdate
	addr  *netlink.AddrUpdate
	route *netlink.Route
	neigh *netlink.Neigh
}

// watch subscribes to link, address, route and neighbour notifications in
// the handle's namespace and forwards them to out until ctx is done; a
// failed subscription is reported as lost and re-established.
func (e *Engine) watch(ctx context.Context, out chan<- notification) error {
	var nsp *netns.NsHandle
	if ns := e.cfg.Netns; ns != 0 && ns.IsOpen() {
		nsp = &ns
	}
	subs := []func(done <-chan struct{}, errc func(error)) (<-chan notification, error){
		func(done <-chan struct{}, errc func(error)) (<-chan notification, error) {
			ch := make(chan netlink.LinkUpdate, 256)
			err := netlink.LinkSubscribeWithOptions(ch, done, netlink.LinkSubscribeOptions{
				Namespace: nsp, ErrorCallback: errc, ReceiveBufferSize: rcvBuf, ReceiveBufferForceSize: true})
			return forward(ch, func(u netlink.LinkUpdate) notification {
				return notification{link: &u, del: u.Header.Type == unix.RTM_DELLINK}
			}), err
		},
		func(done <-chan struct{}, errc func(error)) (<-chan notification, error) {
			ch := make(chan netlink.AddrUpdate, 256)
			err := netlink.AddrSubscribeWithOptions(ch, done, netlink.AddrSubscribeOptions{
				Namespace: nsp, ErrorCallback: errc, ReceiveBufferSize: rcvBuf, ReceiveBufferForceSize: true})
			return forward(ch, func(u netlink.AddrUpdate) notification {
				return notification{addr: &u, del: !u.NewAddr}
			}), err
		},
		func(done <-chan struct{}, errc func(error)) (<-chan notification, error) {
			ch := make(chan netlink.RouteUpdate, subscriptionQueue)
			err := netlink.RouteSubscribeWithOptions(ch, done, netlink.RouteSubscribeOptions{
				Namespace: nsp, ErrorCallback: errc, ReceiveBufferSize: rcvBuf, ReceiveBufferForceSize: true})
			return forward(ch, func(u netlink.RouteUpdate) notification {
				return notification{route: &u.Route, del: u.Type == unix.RTM_DELROUTE}
			}), err
		},
		func(done <-chan struct{}, errc func(error)) (<-chan notification, error) {
			ch := make(chan netlink.NeighUpdate, subscriptionQueue)
			err := netlink.NeighSubscribeWithOptions(ch, done, netlink.NeighSubscribeOptions{
				Namespace: nsp, ErrorCallback: errc, ReceiveBufferSize: rcvBuf, ReceiveBufferForceSize: true})
			return forward(ch, func(u netlink.NeighUpdate) notification {
				return notification{neigh: &u.Neigh, del: u.Type == unix.RTM_DELNEIGH}
			}), err
		},
	}
	for _, sub := range subs {
		first := make(chan error, 1)
		go e.keepSubscribed(ctx, sub, out, first)
		if err := <-first; err != nil {
			return err
		}
	}
	return nil
}

// forward converts a subscription's updates, closing its output when the
// subscription ends.
func forward[T any](in <-chan T, conv func(T) notification) <-chan notification {
	out := make(chan notification, 64)
	go func() {
		defer close(out)
		for u := range in {
			out <- conv(u)
		}
	}()
	return out
}

// keepSubscribed runs one subscription until ctx is done, re-subscribing
// (and reporting a lost notification) when it fails. The outcome of the
// first attempt goes to first.
func (e *Engine) keepSubscribed(ctx context.Context, sub func(<-chan struct{}, func(error)) (<-chan notification, error), out chan<- notification, first chan<- error) {
	for attempt := 0; ; attempt++ {
		done := make(chan struct{})
		ch, err := sub(done, func(err error) {
			if ctx.Err() == nil {
				e.log.Debug("netlink subscription failed", "err", err)
			}
		})
		if attempt == 0 {
			first <- err
			if err != nil {
				close(done)
				return
			}
		}
		if err == nil {
			for n := range ch {
				select {
				case out <- n:
				case <-ctx.Done():
				}
				if ctx.Err() != nil {
					break
				}
			}
		}
		close(done)
		for range ch {
		}
		if ctx.Err() != nil {
			return
		}
		select {
		case out <- notification{lost: true}:
		case <-ctx.Done():
			return
		}
		select {
		case <-time.After(100 * time.Millisecond):
		case <-ctx.Done():
			return
		}
	}
}

// wants reports whether a notification shows something of ours that
// differs from the desired state (deleted, changed, or there unwanted); the
// engine's own changes, which match it, are ignored.
func (e *Engine) wants(n notification) bool {
	switch {
	case n.lost:
		return true
	case n.link != nil:
		return e.wantsLink(n)
	case n.addr != nil:
		return e.wantsAddr(n)
	case n.route != nil:
		return e.wantsRoute(n)
	case n.neigh != nil:
		return e.wantsNeigh(n)
	}
	return false
}

func (e *Engine) wantsLink(n notification) bool {
	if !e.hasDevice() {
		return false
	}
	a := n.link.Link.Attrs()
	if a.Name != e.devName() && a.Index != e.devIndex {
		return false
	}
	if e.isTunnel() {
		return n.del || a.Index != e.devIndex || a.Flags&net.FlagUp == 0
	}
	if !n.del && e.deviceOK(a) {
		return false
	}
	// The notification may be an old one, about the device being set
	// up: look at the device as it is now before a full pass.
	l, err := e.cfg.Handle.LinkByName(e.cfg.Device.Name)
	return err != nil || !e.deviceOK(l.Attrs())
}

func (e *Engine) deviceOK(a *netlink.LinkAttrs) bool {
	return a.Index == e.devIndex && a.Name == e.cfg.Device.Name && a.MTU == e.cfg.Device.MTU &&
		macEqual(a.HardwareAddr, e.cfg.Device.MAC) && a.Flags&net.FlagUp != 0
}

// String describes the notification for logs.
func (n notification) String() string {
	verb := "new"
	if n.del {
		verb = "del"
	}
	switch {
	case n.lost:
		return "subscription lost"
	case n.link != nil:
		return fmt.Sprintf("%s link %s", verb, n.link.Link.Attrs().Name)
	case n.addr != nil:
		return fmt.Sprintf("%s addr %s dev %d", verb, n.addr.LinkAddress.String(), n.addr.LinkIndex)
	case n.route != nil:
		return fmt.Sprintf("%s route %s proto %d", verb, n.route.Dst, n.route.Protocol)
	case n.neigh != nil:
		return fmt.Sprintf("%s neigh family %d %s %s dev %d", verb, n.neigh.Family, n.neigh.IP, n.neigh.HardwareAddr, n.neigh.LinkIndex)
	}
	return "?"
}

func (e *Engine) wantsAddr(n notification) bool {
	idx := n.addr.LinkIndex
	ip, ok := netip.AddrFromSlice(n.addr.LinkAddress.IP)
	if !ok || ip.Unmap().Is4() == e.v6() || ip.IsLinkLocalUnicast() {
		return false
	}
	if idx == e.cfg.Ext.Index {
		return e.cfg.DirectRouting || !e.hasDevice()
	}
	if !e.hasDevice() || idx != e.devIndex {
		return false
	}
	ones, _ := n.addr.LinkAddress.Mask.Size()
	isOwn := ip.Unmap() == e.own.Addr() && ones == e.hostBits()
	return isOwn == n.del
}

func (e *Engine) wantsRoute(n notification) bool {
	r := n.route
	if r.Table != syscall.RT_TABLE_MAIN || r.Family != e.nlFamily() {
		return false
	}
	dst, ok := ipNetPrefix(r.Dst)
	if !ok {
		return false
	}
	if e.isTunnel() && dst == e.cfg.Network.Masked() {
		return e.wantsTunnelRoute(n)
	}
	p := e.peers[dst]
	if p == nil || !p.reachable {
		// Ours but unwanted: prune it; someone else's (another
		// protocol, another instance's network): not our business.
		return e.ownsRoute(r) && !n.del
	}
	if n.del {
		return e.ownsRoute(r) && e.isWantedRoute(r, p)
	}
	// A foreign route over the peer's prefix is left alone (trackForeign
	// has seen it and asked for a pass that reports it).
	return e.ownsRoute(r) && !e.isWantedRoute(r, p)
}

// isWantedRoute is routeMatches(r, e.wantRoute(p)) without building the
// route: a cold start has a notification for each of thousands.
func (e *Engine) isWantedRoute(r *netlink.Route, p *peer) bool {
	link, gw, flags := e.cfg.Ext.Index, p.publicIP, 0
	if p.mode == backend.ModeVXLAN {
		link, gw, flags = e.devIndex, p.subnet.Addr(), int(netlink.FLAG_ONLINK)
	}
	return r.LinkIndex == link && ipEqual(r.Gw, gw) &&
		r.Flags&int(netlink.FLAG_ONLINK) == flags && r.Protocol == backend.RouteProtocol
}

func (e *Engine) wantsNeigh(n notification) bool {
	nb := n.neigh
	if !e.isVXLAN() || e.devIndex == 0 || nb.LinkIndex != e.devIndex {
		return false
	}
	switch nb.Family {
	case syscall.AF_INET, syscall.AF_INET6:
		if nb.Family != e.nlFamily() {
			return false
		}
		ip, ok := netip.AddrFromSlice(nb.IP)
		if !ok {
			return false
		}
		p := e.byGW[ip.Unmap()]
		if p == nil {
			return !n.del && nb.State == netlink.NUD_PERMANENT && e.ownsNeighAddr(ip.Unmap())
		}
		return n.del || nb.State != netlink.NUD_PERMANENT || !macEqual(nb.HardwareAddr, p.mac)
	case syscall.AF_BRIDGE:
		if len(nb.HardwareAddr) != 6 {
			return false
		}
		p := e.fdbOwner([6]byte(nb.HardwareAddr))
		if p == nil {
			return !n.del && nb.State == netlink.NUD_PERMANENT && nb.IP != nil && nb.HardwareAddr[0]&1 == 0
		}
		return n.del || !ipEqual(nb.IP, p.publicIP)
	}
	return false
}
