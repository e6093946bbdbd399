package bench

import (
	"context"
	"net/netip"
	"sync"
	"syscall"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	clientv3 "go.etcd.io/etcd/client/v3"
	"golang.org/x/sys/unix"

	"github.com/netagent/netagent/backend"
	"github.com/netagent/netagent/backend/backendtest"
)

// agentEventTimeout bounds the wait for one lease's entries.
const agentEventTimeout = 10 * time.Second

// agentKernelSeen records when the kernel of one namespace notified each
// vxlan entry: routes by destination, neighbours by address, fdb entries
// by destination IP. Only additions are recorded, the first time each.
type agentKernelSeen struct {
	mu     sync.Mutex
	routes map[netip.Prefix]time.Time
	neighs map[netip.Addr]time.Time
	fdbs   map[netip.Addr]time.Time
	// lladdrs records every neighbour and fdb entry by family, address
	// and MAC: a peer whose VTEP MAC or public address changed gets new
	// ones.
	lladdrs map[agentNeighKey]time.Time
	// last is when the latest first-time entry was recorded.
	last time.Time
	errs []error
	wake chan struct{} // signalled (non-blocking) on every record
	// order counts, on one socket in the kernel's order, routes that
	// arrived before their neighbour or fdb entry (docs/compatibility.md
	// §5.2).
	order *backendtest.Order
}

// agentNotifyBuffer is the receive buffer of the subscriptions: enough for
// a cold start's 15,000 notifications should the reader fall behind.
const agentNotifyBuffer = 32 << 20

// agentWatchKernel subscribes to route and neighbour notifications in nsh
// until stop is closed.
func agentWatchKernel(nsh netns.NsHandle, stop <-chan struct{}) (*agentKernelSeen, error) {
	ks := &agentKernelSeen{
		routes:  map[netip.Prefix]time.Time{},
		neighs:  map[netip.Addr]time.Time{},
		fdbs:    map[netip.Addr]time.Time{},
		lladdrs: map[agentNeighKey]time.Time{},
		wake:    make(chan struct{}, 1),
	}
	onErr := func(err error) {
		ks.mu.Lock()
		ks.errs = append(ks.errs, err)
		ks.mu.Unlock()
	}
	// No receive timeout: the library ends a subscription on any receive
	// error, a timeout included. Closing stop closes the sockets; a
	// receiver blocked in recvmsg returns at the namespace's next
	// notification, or when the process exits.
	neighCh := make(chan netlink.NeighUpdate, 4096)
	if err := netlink.NeighSubscribeWithOptions(neighCh, stop, netlink.NeighSubscribeOptions{
		Namespace: &nsh, ErrorCallback: onErr, ReceiveBufferSize: agentNotifyBuffer, ReceiveBufferForceSize: true}); err != nil {
		return nil, err
	}
	order, err := backendtest.WatchOrder(nsh, stop)
	if err != nil {
		return nil, err
	}
	ks.order = order
	routeCh := make(chan netlink.RouteUpdate, 4096)
	if err := netlink.RouteSubscribeWithOptions(routeCh, stop, netlink.RouteSubscribeOptions{
		Namespace: &nsh, ErrorCallback: onErr, ReceiveBufferSize: agentNotifyBuffer, ReceiveBufferForceSize: true}); err != nil {
		return nil, err
	}
	go func() {
		for {
			select {
			case <-stop:
				return
			case u, ok := <-neighCh:
				if !ok {
					neighCh = nil
					continue
				}
				ks.neigh(u, time.Now())
			case u, ok := <-routeCh:
				if !ok {
					routeCh = nil
					continue
				}
				ks.route(u, time.Now())
			}
		}
	}()
	return ks, nil
}

func (ks *agentKernelSeen) neigh(u netlink.NeighUpdate, at time.Time) {
	if u.Type != unix.RTM_NEWNEIGH || u.IP == nil {
		return
	}
	a, ok := netip.AddrFromSlice(u.IP)
	if !ok {
		return
	}
	a = a.Unmap()
	ks.mu.Lock()
	defer ks.mu.Unlock()
	if k := (agentNeighKey{u.Family, a, u.HardwareAddr.String()}); ks.lladdrs[k].IsZero() {
		ks.lladdrs[k] = at
	}
	switch {
	case u.Family == syscall.AF_BRIDGE:
		if _, seen := ks.fdbs[a]; !seen {
			ks.fdbs[a], ks.last = at, at
		}
	case u.State == netlink.NUD_PERMANENT:
		if _, seen := ks.neighs[a]; !seen {
			ks.neighs[a], ks.last = at, at
		}
	}
	ks.signal()
}

func (ks *agentKernelSeen) route(u netlink.RouteUpdate, at time.Time) {
	if u.Type != unix.RTM_NEWROUTE || u.Protocol != backend.RouteProtocol || u.Dst == nil {
		return
	}
	ones, _ := u.Dst.Mask.Size()
	a, ok := netip.AddrFromSlice(u.Dst.IP)
	if !ok {
		return
	}
	p := netip.PrefixFrom(a.Unmap(), ones)
	ks.mu.Lock()
	defer ks.mu.Unlock()
	if _, seen := ks.routes[p]; !seen {
		ks.routes[p], ks.last = at, at
	}
	ks.signal()
}

// agentNeighKey names a neighbour (FAMILY_V4) or fdb entry (AF_BRIDGE) by
// its address and MAC.
type agentNeighKey struct {
	family int
	ip     netip.Addr
	mac    string
}

func (ks *agentKernelSeen) signal() {
	select {
	case ks.wake <- struct{}{}:
	default:
	}
}

// peerAt returns when the last of peer i's three entries was notified, and
// whether all three have been.
func (ks *agentKernelSeen) peerAt(i int) (time.Time, bool) {
	sub, pub, _ := dpPeer(i)
	ks.mu.Lock()
	defer ks.mu.Unlock()
	r, okR := ks.routes[sub]
	n, okN := ks.neighs[sub.Addr()]
	f, okF := ks.fdbs[pub]
	if !okR || !okN || !okF {
		return time.Time{}, false
	}
	last := r
	for _, t := range []time.Time{n, f} {
		if t.After(last) {
			last = t
		}
	}
	return last, true
}

// counts returns how many routes, neighbours and fdb entries have been
// notified, and when the latest of them was.
func (ks *agentKernelSeen) counts() (routes, neighs, fdbs int, last time.Time) {
	ks.mu.Lock()
	defer ks.mu.Unlock()
	return len(ks.routes), len(ks.neighs), len(ks.fdbs), ks.last
}

// first returns when the earliest entry was notified (zero if none).
func (ks *agentKernelSeen) first() time.Time {
	ks.mu.Lock()
	defer ks.mu.Unlock()
	var first time.Time
	for _, m := range []map[netip.Addr]time.Time{ks.neighs, ks.fdbs} {
		for _, t := range m {
			if first.IsZero() || t.Before(first) {
				first = t
			}
		}
	}
	for _, t := range ks.routes {
		if first.IsZero() || t.Before(first) {
			first = t
		}
	}
	return first
}

func (ks *agentKernelSeen) errors() []error {
	ks.mu.Lock()
	defer ks.mu.Unlock()
	return append([]error(nil), ks.errs...)
}

// agentEvent is the latency of one new lease.
type agentEvent struct {
	// FromPut is from the Put being issued, FromAck from its reply, to the
	// last of the lease's three entries being notified by the kernel.
	// FromAck is negative when the kernel was faster than the reply.
	FromPut, FromAck time.Duration
}

// leaseEvents writes the leases of peers first .. first+count-1 one at a
// time, attached to the etcd lease id, and for each waits until ks saw its
// three entries.
func (al *agentLab) leaseEvents(ks *agentKernelSeen, id clientv3.LeaseID, first, count int) []agentEvent {
	al.b.Helper()
	var out []agentEvent
	for i := first; i < first+count; i++ {
		key, val := al.leaseKV(i)
		ctx, cancel := context.WithTimeout(al.ctx, agentEventTimeout)
		t0 := time.Now()
		_, err := al.etcd.Put(ctx, key, val, clientv3.WithLease(id))
		t1 := time.Now()
		if err != nil {
			cancel()
			al.b.Fatalf("put lease %d: %v", i, err)
		}
		for {
			at, ok := ks.peerAt(i)
			if ok {
				out = append(out, agentEvent{FromPut: at.Sub(t0), FromAck: at.Sub(t1)})
				break
			}
			select {
			case <-ks.wake:
			case <-ctx.Done():
				cancel()
				al.b.Fatalf("lease %d (%s): entries not in the kernel within %v (subscription errors: %v)", i, key, agentEventTimeout, ks.errors())
			}
		}
		cancel()
	}
	return out
}
