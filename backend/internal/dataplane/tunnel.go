package dataplane

import (
	"errors"
	"fmt"
	"net/netip"
	"syscall"

	"github.com/vishvananda/netlink"

	"github.com/netagent/netagent/backend"
)

// Tunnel is a device whose peers the backend programs itself (WireGuard:
// a peer per lease, configured through the device's own interface), with
// one route for the whole overlay network through it instead of a route,
// neighbour and fdb entry per peer. The engine keeps everything else: the
// claims table, the device's address, the overlay route, passes,
// notifications and status.
type Tunnel interface {
	// Name is the device's name ("flannel-wg").
	Name() string
	// EnsureDevice creates the device or adopts the one there, and makes
	// its MTU and state as wanted (not its addresses: the engine's).
	// repaired is set when something had to be put back.
	EnsureDevice() (link netlink.Link, repaired bool, err error)
	// SyncPeers makes the device's peers exactly peers (one batched
	// configuration), and returns the errors by subnet and how many peers
	// it found missing, wrong or unwanted.
	SyncPeers(peers []TunnelPeer) (failed map[netip.Prefix]error, repairs int, err error)
	// UpdatePeers programs the peers of set and removes those of the
	// subnets of removed, touching no other peer.
	UpdatePeers(set []TunnelPeer, removed []netip.Prefix) (failed map[netip.Prefix]error)
}

// TunnelPeer is one lease as a Tunnel programs it.
type TunnelPeer struct {
	Key      string
	Subnet   netip.Prefix
	PublicIP netip.Addr
	// Data is the lease's BackendData (BackendV6Data for the IPv6
	// overlay), already accepted by Config.Identity.
	Data []byte
}

// kindPeer counts, in Counters.Repairs, tunnel peers put back.
const kindPeer = "peer"

func (e *Engine) isTunnel() bool { return e.cfg.Tunnel != nil }

// hasDevice reports whether the engine owns a device (vxlan, tunnel).
func (e *Engine) hasDevice() bool { return e.isVXLAN() || e.isTunnel() }

// devName is the engine's device's name ("" for host-gw).
func (e *Engine) devName() string {
	switch {
	case e.isVXLAN():
		return e.cfg.Device.Name
	case e.isTunnel():
		return e.cfg.Tunnel.Name()
	}
	return ""
}

// ensureTunnel has the tunnel make its device, then sets the own address
// on it. It sets e.devIndex.
func (e *Engine) ensureTunnel() error {
	link, repaired, err := e.cfg.Tunnel.EnsureDevice()
	if err != nil {
		e.devIndex = 0
		return err
	}
	if idx := link.Attrs().Index; idx != e.devIndex {
		e.log.Info("tunnel device ready", "device", e.devName(), "index", idx)
		e.devIndex = idx
	}
	if repaired {
		e.countRepair(kindDevice)
	}
	return e.ensureAddress(link)
}

// tunnelRoute is the overlay network's route through the tunnel device.
// Equivalent to `ip route replace <network> dev flannel-wg proto 78`.
func (e *Engine) tunnelRoute() *netlink.Route {
	return &netlink.Route{
		Dst:       prefixNet(e.cfg.Network),
		LinkIndex: e.devIndex,
		Scope:     netlink.SCOPE_LINK,
		Protocol:  backend.RouteProtocol,
		Table:     syscall.RT_TABLE_MAIN,
	}
}

// tunnelRouteOps appends the op that puts the overlay route in place when
// the kernel does not hold it, and marks it seen in k.
func (e *Engine) tunnelRouteOps(ops []op, k *kernelState) []op {
	n := e.cfg.Network.Masked()
	want := e.tunnelRoute()
	if r, ok := k.routes[n]; !ok || !r.matches(want) {
		ops = append(ops, op{kind: kindRoute, route: want, repair: e.firstDone})
	}
	delete(k.routes, n)
	return ops
}

// tunnelPeers is every peer as the tunnel programs it.
func (e *Engine) tunnelPeers() []TunnelPeer {
	out := make([]TunnelPeer, 0, len(e.peers))
	for _, p := range e.peers {
		out = append(out, p.tunnelPeer())
	}
	return out
}

func (p *peer) tunnelPeer() TunnelPeer {
	return TunnelPeer{Key: p.key, Subnet: p.subnet, PublicIP: p.publicIP, Data: p.data}
}

// syncTunnel has the tunnel program every peer; it records the failures
// for finishPass and counts the repairs.
func (e *Engine) syncTunnel() error {
	failed, repairs, err := e.cfg.Tunnel.SyncPeers(e.tunnelPeers())
	e.tunnelFailed = failed
	if repairs > 0 && e.firstDone {
		e.mu.Lock()
		e.counters.Repairs[kindPeer] += uint64(repairs)
		e.mu.Unlock()
	}
	if err != nil {
		return fmt.Errorf("configure peers of %s: %w", e.devName(), err)
	}
	return nil
}

// programTunnel has the tunnel apply the peers of todo, and returns the
// failures by subnet.
func (e *Engine) programTunnel(todo []peerChange) map[netip.Prefix]error {
	if e.devIndex == 0 {
		failed := make(map[netip.Prefix]error, len(todo))
		for _, c := range todo {
			failed[c.s] = errors.New("the device is not ready; the next pass retries")
		}
		return failed
	}
	var set []TunnelPeer
	var removed []netip.Prefix
	for _, c := range todo {
		if c.p == nil {
			removed = append(removed, c.s)
		} else {
			set = append(set, c.p.tunnelPeer())
		}
	}
	return e.cfg.Tunnel.UpdatePeers(set, removed)
}

// wantsTunnelRoute reports whether a notification about the overlay
// route asks for a pass: it was deleted, or is not the wanted one.
func (e *Engine) wantsTunnelRoute(n notification) bool {
	r := n.route
	if !e.ownsRoute(r) {
		return false
	}
	if n.del {
		return r.LinkIndex == e.devIndex
	}
	return !routeMatches(r, e.tunnelRoute())
}
