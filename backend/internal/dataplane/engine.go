// Package dataplane is the reconcile loop shared by the vxlan and host-gw
// backends: one goroutine owns the desired state (the peers' leases), applies
// lease events incrementally, and runs full passes that diff the desired
// state against the kernel on start, on netlink notifications about what it
// installed, and periodically.
//
// An Engine serves one address family: the IPv4 overlay (lease Subnet,
// PublicIP, BackendData, device flannel.N) or the IPv6 overlay (IPv6Subnet,
// PublicIPv6, BackendV6Data, device flannel-v6.N). A dual-stack backend
// runs one engine per family as a Group; their kernel state never
// overlaps (distinct devices, route families and neighbour tables).
package dataplane

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/netagent/netagent/backend"
	"github.com/netagent/netagent/iface"
	"github.com/netagent/netagent/lease"
)

const (
	// debounce is how long a notification about our objects waits for
	// more before a full pass runs.
	debounce = 50 * time.Millisecond
	// bigBatch is the batch size from which a batch is applied with one
	// full pass instead of event by event.
	bigBatch = 64
	// minRetry is the first retry delay after a pass with errors.
	minRetry = time.Second
	// notifyQueue is how many parsed netlink notifications wait for the
	// Run goroutine, and subscriptionQueue how many each subscription
	// holds before that. A cold start's pass notifies about every entry
	// it programs while Run is busy with it: queued here, parsed, they
	// were ~4 MB of heap at the agent's peak with 5,000 peers; the rest
	// of the backlog waits in the subscription sockets' receive buffers
	// (rcvBuf, kernel memory), and one that overflows is a lost
	// subscription, which a full pass makes up for.
	notifyQueue       = 1 << 10
	subscriptionQueue = 256
)

// DeviceSpec describes the VXLAN device (docs/compatibility.md §5.1, §5.4).
type DeviceSpec struct {
	Name     string
	VNI      int
	Port     int // 0: the kernel default (8472)
	MTU      int
	MAC      net.HardwareAddr
	Learning bool
	GBP      bool
}

// Config configures an Engine.
type Config struct {
	Log *slog.Logger
	// Family is 4 (default) or 6: the overlay address family the engine
	// programs, and the underlay family its peers are reached over.
	Family int
	Handle *netlink.Handle
	// Netns is the namespace Handle works in, for the netlink
	// subscriptions and a second handle; 0 or netns.None() for the
	// current one.
	Netns netns.NsHandle
	Ext   iface.External
	// Type is the lease BackendType the engine serves.
	Type string
	// Network is the overlay network of Family: a lease whose subnet is
	// not inside it is refused with a warning (invalid: no such check).
	Network netip.Prefix
	// SubnetLen is the prefix length of the network's leases: a lease of
	// another length is refused with a warning (0: no such check). Every
	// agent leases subnets of exactly that length; a longer or shorter
	// one overlaps a host's subnet or the free pool, and routing it
	// would take traffic for part of another host's containers elsewhere.
	SubnetLen int
	// Device is the VXLAN device; nil for host-gw.
	Device *DeviceSpec
	// Tunnel, when set (and Device nil), is a device whose peers the
	// backend programs itself (wireguard, see Tunnel); Identity must be
	// set too: it checks a lease's backend data before it is a peer.
	Tunnel Tunnel
	// DirectRouting routes to peers on a directly connected subnet of Ext
	// via their public IP (vxlan only; host-gw always does).
	DirectRouting bool
	// ParseMAC extracts the VTEP MAC from a peer's BackendData (or
	// BackendV6Data for Family 6) (vxlan).
	ParseMAC func(data []byte) (net.HardwareAddr, error)
	// Identity returns the backend identity a lease's BackendData (or
	// BackendV6Data) claims, which no two programmed leases may share
	// (docs/compatibility.md §3.8); nil: the VTEP MAC for vxlan, none
	// for host-gw. A backend whose peers are named by a key (WireGuard's
	// public key) returns it here.
	Identity func(data []byte) (string, error)
	// IdentityName names the identity in logs and status ("VtepMAC").
	IdentityName string
	// IPv4 and IPv6 are the families the network config enables; a key
	// naming a subnet of another family is refused (§3.8). Both false:
	// Family's alone.
	IPv4, IPv6     bool
	ResyncInterval time.Duration
	MTU            int
	// NoRepair makes passes report, not fix, what they find missing or
	// wrong among the routes, neighbours and fdb entries of peers that
	// had been programmed, and leave orphans in place: such a peer is
	// reported not programmed with what is wrong, until the kernel holds
	// its entries again (put back by hand, or by a lease event that
	// programs the peer anew). Peers are still installed when their lease
	// arrives or changes. A debugging aid: see what breaks, and what
	// notices, without the agent hiding it.
	NoRepair bool
}

// peer is one lease key as a claim (see claim) and, when its claim wins,
// the desired state of the remote lease, and what was last applied. One
// struct, not a claim pointing at a peer: with 5,000 leases the two were
// 400 bytes a key.
type peer struct {
	key      string
	subnet   netip.Prefix
	publicIP netip.Addr
	claimFields
	mac net.HardwareAddr
	// data is the lease's backend data of the family (tunnel only).
	data []byte
	mode string
	// applied is what the kernel holds for the peer as far as the engine
	// knows (from nil: nothing).
	applied applied
	lastErr string
	// reachable is false for a host-gw peer that is not on a directly
	// connected subnet: nothing is installed for it.
	reachable  bool
	programmed bool
	// leftBroken is set when the last pass found the peer's entries
	// wrong and left them so (Config.NoRepair): fixing them would be a
	// repair.
	leftBroken bool
	// own marks this host's lease as a claim: it wins on this host
	// whatever its revision (the host keeps its subnet); it is never a
	// peer.
	own bool
	// wrongType marks a claim refused for its backend type (see form).
	wrongType bool
	// since is when the lease event that made this desired state was
	// taken, until the kernel holds it (zero after).
	since time.Time
}

// applied is what was installed for a peer: the desired state of from
// (the peer itself once settled, the one it replaced until then) on the
// device of index devIndex. A peer's mode, public IP and MAC do not
// change once it is made (a new mode is a new peer), so pointing at it
// records them: a copy of them was 80 bytes a peer.
type applied struct {
	from     *peer
	devIndex int
}

// Engine is the reconcile loop. Its state is owned by the Run goroutine;
// mu guards what Status reads.
type Engine struct {
	cfg Config
	log *slog.Logger

	mu       sync.Mutex
	peers    map[netip.Prefix]*peer
	counters backend.Counters
	lastPass time.Time
	// ready is closed when the first pass finishes.
	ready chan struct{}
	// peersGen counts changes to what Status shows of peers; statusPeers
	// is Status's sorted list as of statusGen.
	peersGen, statusGen uint64
	statusPeers         []backend.PeerStatus
	// refused is what Status reports of the keys the table refuses.
	refused map[string]backend.RefusedLease
	// statusRefused is Status's sorted list as of statusGen.
	statusRefused []backend.RefusedLease

	// Owned by the Run goroutine.
	h2       *netlink.Handle
	own      netip.Prefix
	ownKnown bool
	// ownKey is this host's lease key; table holds every lease key of
	// the engine's type (docs/compatibility.md §3.8); warned is, per
	// refused key, what was last logged about it.
	ownKey   string
	table    *claims
	warned   map[string]string
	devIndex int
	extNets  []netip.Prefix
	// byGW is every peer in vxlan mode by its gateway (its subnet's
	// address).
	byGW map[netip.Addr]*peer
	// byMAC is, per VTEP MAC of peers in vxlan mode, the one whose fdb
	// entry the kernel holds (the latest to take the MAC); macOthers the
	// subnets of the other peers with that MAC: almost always none, keys
	// of one host (§3.8). A pointer per MAC, not a set or a list: with
	// 5,000 peers a map each was ~2 MB of the agent's heap, a list 0.4.
	byMAC     map[[6]byte]*peer
	macOthers map[[6]byte][]netip.Prefix
	firstDone bool
	// unrepaired holds, during a pass with Config.NoRepair, what was
	// found wrong per peer and left as it was.
	unrepaired map[netip.Prefix]error
	// broken is the unrepaired of the last pass.
	broken map[netip.Prefix]error
	// foreign holds the routes over prefixes of the network that are
	// not the engine's, from the last dump and the notifications since
	// (see ownsRoute).
	foreign map[netip.Prefix]*netlink.Route
	// conflicts holds the peers whose prefix a foreign route holds, as
	// last reported; guarded by mu.
	conflicts map[netip.Prefix]string
	// tunnelFailed holds, during a pass, the tunnel's errors by peer.
	tunnelFailed map[netip.Prefix]error
}

// New returns an engine; it does not touch the kernel.
func New(cfg Config) *Engine {
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	if cfg.ResyncInterval <= 0 {
		cfg.ResyncInterval = 30 * time.Second
	}
	return &Engine{
		cfg:       cfg,
		log:       cfg.Log,
		peers:     make(map[netip.Prefix]*peer),
		byGW:      make(map[netip.Addr]*peer),
		byMAC:     make(map[[6]byte]*peer),
		macOthers: make(map[[6]byte][]netip.Prefix),
		table:     newClaims(),
		warned:    make(map[string]string),
		refused:   make(map[string]backend.RefusedLease),
		foreign:   make(map[netip.Prefix]*netlink.Route),
		counters:  backend.Counters{Repairs: make(map[string]uint64)},
		ready:     make(chan struct{}),
	}
}

// Ready is closed when the engine's first pass has finished, the moment
// Status().LastPass is first set: the device and the peers of the first
// update have been programmed (or their failures counted).
func (e *Engine) Ready() <-chan struct{} { return e.ready }

func (e *Engine) isVXLAN() bool { return e.cfg.Device != nil }

// v6 reports whether the engine serves the IPv6 overlay.
func (e *Engine) v6() bool { return e.cfg.Family == 6 }

// nlFamily is the netlink family of the engine's routes and neighbours.
func (e *Engine) nlFamily() int {
	if e.v6() {
		return netlink.FAMILY_V6
	}
	return netlink.FAMILY_V4
}

// hostBits is the length of a host prefix in the engine's family.
func (e *Engine) hostBits() int {
	if e.v6() {
		return 128
	}
	return 32
}

// localAddr is the external interface's address of the engine's family
// (the VXLAN local address).
func (e *Engine) localAddr() netip.Addr {
	if e.v6() {
		return e.cfg.Ext.AddrV6
	}
	return e.cfg.Ext.Addr
}

// publicIP is this host's published address of the engine's family.
func (e *Engine) publicIP() netip.Addr {
	if e.v6() {
		return e.cfg.Ext.PublicIPv6
	}
	return e.cfg.Ext.PublicIP
}

// leaseSubnet is a lease's subnet of the engine's family (invalid if it
// has none).
func (e *Engine) leaseSubnet(l *lease.Lease) netip.Prefix {
	if e.v6() {
		return l.IPv6Subnet
	}
	return l.Subnet
}

// Run owns the data plane until ctx is done (see backend.Backend.Run). The
// kernel state is left in place when it returns, so that a restarted agent
// finds it and traffic does not stop.
func (e *Engine) Run(ctx context.Context, updates <-chan backend.Update) error {
	if e.cfg.Handle == nil {
		return errors.New("dataplane: no netlink handle")
	}
	h2, err := newHandle(e.cfg.Netns)
	if err != nil {
		e.log.Warn("second netlink handle unavailable, programming serially", "err", err)
	} else {
		e.h2 = h2
		defer h2.Close()
	}

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	notifs := make(chan notification, notifyQueue)
	if err := e.watch(ctx, notifs); err != nil {
		return fmt.Errorf("dataplane: subscribe to netlink: %w", err)
	}

	resync := time.NewTicker(e.cfg.ResyncInterval)
	defer resync.Stop()
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	armed := false
	arm := func(d time.Duration) {
		if !armed {
			timer.Reset(d)
			armed = true
		}
	}
	retry := minRetry

	pass := func() {
		if !e.ownKnown {
			return
		}
		if armed {
			timer.Stop()
			armed = false
		}
		if err := e.pass(); err != nil {
			e.log.Warn("reconcile pass had errors", "err", err, "retry_in", retry)
			arm(retry)
			retry = min(2*retry, e.cfg.ResyncInterval)
			return
		}
		retry = minRetry
	}

	onUpdate := func(u backend.Update, ok bool) {
		if !ok {
			updates = nil
			return
		}
		full := e.update(u)
		// Take whatever else is already queued before programming, so
		// that a burst costs one pass.
	drain:
		for range 1024 {
			select {
			case u, ok := <-updates:
				if !ok {
					updates = nil
					break drain
				}
				full = e.update(u) || full
			default:
				break drain
			}
		}
		if full || !e.firstDone {
			pass()
		}
	}

	for {
		// Lease events go first: a backlog of notifications must not
		// delay them.
		select {
		case u, ok := <-updates:
			onUpdate(u, ok)
			continue
		default:
		}
		select {
		case <-ctx.Done():
			return nil
		case u, ok := <-updates:
			onUpdate(u, ok)
		case n := <-notifs:
			// While entries are left broken (Config.NoRepair) any
			// change may be the one that puts them back.
			changed := n.route != nil && e.trackForeign(n)
			if e.ownKnown && (changed || e.wants(n) || len(e.broken) > 0) {
				e.log.Debug("kernel changed under us", "notification", n.String())
				arm(debounce)
			}
		case <-timer.C:
			armed = false
			pass()
		case <-resync.C:
			pass()
		}
	}
}

func newHandle(ns netns.NsHandle) (*netlink.Handle, error) {
	if ns == 0 || !ns.IsOpen() {
		return netlink.NewHandle()
	}
	return netlink.NewHandleAt(ns)
}

// stamp records on p when its lease event was taken, for the EventLatency
// histogram; a desired state that is the same as old's carries old's stamp
// (zero when it is programmed already), so that a snapshot of unchanged
// leases measures nothing.
func stamp(p, old *peer, now time.Time) {
	if old != nil && old.mode == p.mode && old.publicIP == p.publicIP &&
		macEqual(old.mac, p.mac) && string(old.data) == string(p.data) && old.reachable == p.reachable {
		p.since = old.since
		return
	}
	p.since = now
}

// parse turns a lease into a peer, or nil when it is not one to program.
func (e *Engine) parse(l *lease.Lease) *peer {
	a := &l.Attrs
	sn := e.leaseSubnet(l)
	if a.BackendType != e.cfg.Type || !sn.IsValid() {
		return nil
	}
	if !e.acceptSubnet(l, sn) {
		return nil
	}
	pub, data, fam := a.PublicIP, a.BackendData, "IPv4"
	if e.v6() {
		pub, data, fam = a.PublicIPv6, a.BackendV6Data, "IPv6"
	}
	if !pub.IsValid() || pub.Is4() == e.v6() {
		e.log.Warn("ignoring lease without an "+fam+" public IP", "lease", l.Key())
		return nil
	}
	if pub == e.publicIP() {
		e.log.Warn("ignoring lease with this host's public IP", "lease", l.Key(), "public_ip", pub)
		return nil
	}
	p := &peer{key: l.Key(), subnet: sn.Masked(), publicIP: pub, reachable: true}
	if e.isVXLAN() {
		mac, err := e.cfg.ParseMAC(data)
		if err != nil {
			e.log.Warn("ignoring lease with malformed BackendData", "lease", l.Key(), "err", err)
			return nil
		}
		p.mac = mac
	}
	if e.isTunnel() {
		if _, err := e.cfg.Identity(data); err != nil {
			e.log.Warn("ignoring lease with malformed backend data", "lease", l.Key(), "err", err)
			return nil
		}
		p.data = data
	}
	e.decideMode(p)
	return p
}

// acceptSubnet refuses, with a warning naming the lease, a subnet that
// overlaps this host's own without being it (another key for this host's
// subnet is a claim that this host's lease wins, see claims), that lies
// outside the overlay network, or whose prefix length is not the
// network's subnet length: programming any of those would take traffic
// away from this host's containers or send overlay routes outside the
// overlay.
func (e *Engine) acceptSubnet(l *lease.Lease, sn netip.Prefix) bool {
	if e.ownKnown && sn.Masked() != e.own && sn.Overlaps(e.own) {
		e.log.Warn("ignoring lease overlapping this host's subnet", "lease", l.Key(), "own", e.own)
		return false
	}
	if n := e.cfg.Network; n.IsValid() && !(n.Bits() <= sn.Bits() && n.Contains(sn.Addr())) {
		e.log.Warn("ignoring lease outside the network", "lease", l.Key(), "network", n)
		return false
	}
	if n := e.cfg.SubnetLen; n > 0 && sn.Bits() != n {
		e.log.Warn("ignoring lease of another size than the network's subnets", "lease", l.Key(), "subnet_len", n)
		return false
	}
	return true
}

// decideMode sets the peer's mode from the external interface's subnets.
func (e *Engine) decideMode(p *peer) {
	onLink := e.onLink(p.publicIP)
	switch {
	case e.isTunnel():
		p.mode = backend.ModeWireGuard
	case !e.isVXLAN():
		p.mode = backend.ModeHostGW
		p.reachable = onLink
	case e.cfg.DirectRouting && onLink:
		p.mode = backend.ModeDirect
	default:
		p.mode = backend.ModeVXLAN
	}
}

func (e *Engine) onLink(ip netip.Addr) bool {
	for _, n := range e.extNets {
		if n.Bits() < e.hostBits() && n.Contains(ip) && n.Addr() != ip {
			return true
		}
	}
	return false
}

// setPeer replaces the desired state of subnet s (p nil: removed) and keeps
// the lookup indexes in step. The applied record carries over.
func (e *Engine) setPeer(s netip.Prefix, p *peer) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.peersGen++
	if old := e.peers[s]; old != nil {
		delete(e.byGW, s.Addr())
		if len(old.mac) == 6 {
			e.dropMAC([6]byte(old.mac), s)
		}
		if p != nil {
			p.applied = old.applied
		}
	}
	if p == nil {
		delete(e.peers, s)
		return
	}
	e.peers[s] = p
	if p.mode == backend.ModeVXLAN {
		mac := [6]byte(p.mac)
		e.byGW[s.Addr()] = p
		if o := e.byMAC[mac]; o != nil {
			// The latest peer with a MAC takes its fdb entry.
			e.macOthers[mac] = append(e.macOthers[mac], o.subnet)
		}
		e.byMAC[mac] = p
	}
}

// fdbOwner is the peer whose fdb entry for mac the kernel holds, or nil.
func (e *Engine) fdbOwner(mac [6]byte) *peer { return e.byMAC[mac] }

// dropMAC takes subnet s out of the peers with mac. Keys of one host
// (same public IP) may share a MAC (§3.8): when the owner goes, the fdb
// entry passes to another of them.
func (e *Engine) dropMAC(mac [6]byte, s netip.Prefix) {
	others := slices.DeleteFunc(e.macOthers[mac], func(o netip.Prefix) bool { return o == s })
	if o := e.byMAC[mac]; o != nil && o.subnet == s {
		if len(others) == 0 {
			delete(e.byMAC, mac)
		} else {
			e.byMAC[mac], others = e.peers[others[0]], others[1:]
		}
	}
	if len(others) == 0 {
		delete(e.macOthers, mac)
	} else {
		e.macOthers[mac] = others
	}
}
