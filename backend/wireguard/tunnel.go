package wireguard

import (
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
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/netagent/netagent/backend"
	"github.com/netagent/netagent/backend/internal/dataplane"
)

// tunnel is one WireGuard device as the dataplane engine drives it
// (dataplane.Tunnel): the device through the chosen implementation, and a
// WireGuard peer per public key, with AllowedIPs the subnets of its
// leases, an endpoint PublicIP:Port of one of them, the PSK and the
// keepalive. A device of one address family (Mode separate, or a network
// of one family) is its engine's Tunnel; the single device of both
// families (Mode auto, ipv4, ipv6 on a dual-stack network) is shared by
// the two engines through a familyTunnel each.
type tunnel struct {
	name      string
	mtu       int
	port      int
	key       privateKey
	psk       wgtypes.Key
	keepalive time.Duration
	implFlag  string
	socketDir string
	h         *netlink.Handle
	netns     netns.NsHandle
	log       *slog.Logger
	// mode is the Settings.Mode that picks a peer's endpoint when its
	// leases give one of each family (selectEndpoint); extV6 is this
	// host's public IPv6 (invalid: none).
	mode  string
	extV6 netip.Addr
	// family is the address family the device alone carries (4 or 6),
	// 0 for the device both families share.
	family int
	// noRepair makes SyncPeers report, not fix, what it finds wrong on
	// the device once it has configured it (backend.Options.NoRepair).
	noRepair bool

	// op serialises EnsureDevice, SyncPeers and UpdatePeers: on a shared
	// device the two engines call them concurrently, and each computes a
	// peer's full configuration from both families' leases.
	op sync.Mutex
	// mu guards what Status reads: the implementation and the desired
	// peers.
	mu     sync.Mutex
	impl   impl
	chosen choice
	// desired is the peer wanted for each subnet; applied the keys the
	// device was last configured with.
	desired map[netip.Prefix]want
	applied map[wgtypes.Key]bool
	// synced is set once SyncPeers has configured the device: from then
	// on an unwanted peer, key or port on it is drift, not adoption.
	synced bool
	// familySynced is, on the device both families share, per family (4,
	// 6), whether that family's engine has synced it.
	familySynced map[int]bool
}

var _ dataplane.Tunnel = (*tunnel)(nil)

// want is one lease's peer.
type want struct {
	key      wgtypes.Key
	endpoint netip.AddrPort
}

func (t *tunnel) Name() string { return t.name }

// current is the implementation, nil before the first pass chose it.
func (t *tunnel) current() impl {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.impl
}

// pick chooses the implementation, the first time the device is needed.
func (t *tunnel) pick() (impl, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.impl != nil {
		return t.impl, nil
	}
	existing, err := linkType(t.h, t.name)
	if err != nil {
		return nil, err
	}
	c, err := choose(t.implFlag, existing, func() error { return createKernelLink(t.h, t.name, t.mtu) })
	if err != nil {
		return nil, err
	}
	t.chosen = c
	if c.impl == ImplKernel {
		t.impl = &kernelImpl{name: t.name, mtu: t.mtu, netns: t.netns}
	} else {
		t.impl = &userspaceImpl{name: t.name, mtu: t.mtu, socketDir: t.socketDir, netns: t.netns, log: t.log}
	}
	t.log.Info("WireGuard implementation chosen", "device", t.name, "impl", c.impl, "reason", c.reason)
	return t.impl, nil
}

// EnsureDevice makes the device run with this host's key and port, its
// MTU and up (see dataplane.Tunnel).
//
// Equivalent to: `ip link add flannel-wg type wireguard` (or
// wireguard-go's TUN), `wg set flannel-wg private-key <file> listen-port
// <port>`, `ip link set flannel-wg mtu <mtu> up`.
func (t *tunnel) EnsureDevice() (netlink.Link, bool, error) {
	t.op.Lock()
	defer t.op.Unlock()
	im, err := t.pick()
	if err != nil {
		return nil, false, err
	}
	link, created, err := im.ensure(t.h)
	if err != nil {
		return nil, false, err
	}
	repaired := created
	if created {
		t.mu.Lock()
		t.applied = nil
		t.mu.Unlock()
		port := t.port
		if err := im.configure(wgtypes.Config{PrivateKey: t.key.key(), ListenPort: &port}); err != nil {
			return nil, false, fmt.Errorf("configure %s: %w", t.name, err)
		}
	}
	stray, err := t.removeOtherFamily(link)
	if err != nil {
		return nil, false, err
	}
	repaired = repaired || stray
	a := link.Attrs()
	if a.MTU != t.mtu {
		if err := t.h.LinkSetMTU(link, t.mtu); err != nil {
			return nil, false, fmt.Errorf("set MTU of %s: %w", t.name, err)
		}
		repaired = true
	}
	if a.Flags&net.FlagUp == 0 {
		if err := t.h.LinkSetUp(link); err != nil {
			return nil, false, fmt.Errorf("set %s up: %w", t.name, err)
		}
		repaired = true
	}
	return link, repaired, nil
}

// removeOtherFamily removes from the device of one family the addresses
// of the other (link-local ones aside): the other family's address is
// left there when the device carried both families before a switch to
// Mode separate. It reports whether it removed any.
//
// Equivalent to: `ip -6 addr del <addr> dev flannel-wg` (`ip -4` for
// flannel-wg-v6).
func (t *tunnel) removeOtherFamily(link netlink.Link) (bool, error) {
	other := 0
	switch t.family {
	case 4:
		other = netlink.FAMILY_V6
	case 6:
		other = netlink.FAMILY_V4
	default:
		return false, nil
	}
	addrs, err := backend.RetryDump(func() ([]netlink.Addr, error) { return t.h.AddrList(link, other) })
	if err != nil {
		return false, fmt.Errorf("list addresses of %s: %w", t.name, err)
	}
	removed := false
	for i := range addrs {
		if addrs[i].IP.IsLinkLocalUnicast() {
			continue
		}
		t.log.Info("removing the other family's address", "device", t.name, "addr", addrs[i].IPNet)
		if err := t.h.AddrDel(link, &addrs[i]); err != nil && !backend.IsNotFound(err) {
			return removed, fmt.Errorf("remove %s from %s: %w", addrs[i].IPNet, t.name, err)
		}
		removed = true
	}
	return removed, nil
}

// SyncPeers diffs the device against every lease's peer and applies the
// difference in one configuration (see dataplane.Tunnel).
func (t *tunnel) SyncPeers(peers []dataplane.TunnelPeer) (map[netip.Prefix]error, int, error) {
	return t.syncPeers(peers, 0)
}

// familyTunnel is one engine's view of the device both families share:
// its SyncPeers replaces the leases of its family only.
type familyTunnel struct {
	*tunnel
	v6 bool
}

func (f familyTunnel) SyncPeers(peers []dataplane.TunnelPeer) (map[netip.Prefix]error, int, error) {
	if f.v6 {
		return f.syncPeers(peers, 6)
	}
	return f.syncPeers(peers, 4)
}

// syncPeers is SyncPeers. On the device both families share, family is
// the calling engine's (4 or 6; 0 on a device of one family): the leases
// of the other family are left as wanted, those of family replaced by
// peers. Until the other family has synced the device, its AllowedIPs
// found on the device are carried over: the first pass of one family,
// on a device found with its peers (a kernel device after a restart),
// does not strip the other family's subnets from them.
func (t *tunnel) syncPeers(peers []dataplane.TunnelPeer, family int) (map[netip.Prefix]error, int, error) {
	t.op.Lock()
	defer t.op.Unlock()
	other := func(s netip.Prefix) bool { return family != 0 && s.Addr().Is6() != (family == 6) }
	desired := make(map[netip.Prefix]want, len(peers))
	failed := make(map[netip.Prefix]error)
	for _, p := range peers {
		w, err := wantOf(p)
		if err != nil {
			failed[p.Subnet] = err
			continue
		}
		desired[p.Subnet] = w
	}
	t.mu.Lock()
	for s, w := range t.desired {
		if other(s) {
			desired[s] = w
		}
	}
	t.desired = desired
	applied, synced := t.applied, t.synced
	var carry func(netip.Prefix) bool
	if family != 0 && !t.familySynced[otherFamily(family)] {
		carry = other
	}
	im := t.impl
	t.mu.Unlock()

	dev, err := im.device()
	if err != nil {
		return failAll(failed, desired, err), 0, err
	}
	cfg, repairs, held := t.diffDevice(dev, desired, applied, synced, carry, failed)
	if len(held) > 0 {
		t.log.Warn("WireGuard peers missing or wrong; repair disabled, left as found", "device", t.name, "would", held)
	}
	if cfg.PrivateKey != nil || cfg.ListenPort != nil || len(cfg.Peers) > 0 {
		if err := im.configure(cfg); err != nil {
			err = fmt.Errorf("configure %d peers: %w", len(cfg.Peers), err)
			return failAll(failed, desired, err), repairs, err
		}
	}
	t.mu.Lock()
	t.applied = make(map[wgtypes.Key]bool, len(desired))
	for _, w := range desired {
		t.applied[w.key] = true
	}
	t.synced = true
	if family != 0 {
		if t.familySynced == nil {
			t.familySynced = make(map[int]bool, 2)
		}
		t.familySynced[family] = true
	}
	t.mu.Unlock()
	return failed, repairs, nil
}

// diffDevice is the configuration that makes dev hold the peers of
// desired and this host's key and port, and how many peers it repairs.
// The AllowedIPs of dev that carry (nil: none) selects stay on their
// peers, with the peer's endpoint (carryOver), and a peer that is not
// wanted but has such AllowedIPs is left alone. The repairs are the peers
// found unwanted or wrong, or missing once configured (applied).
// With noRepair, what would be a repair is left out of the configuration
// and listed in held: a peer configured before (applied) and found
// missing or wrong, and, once the device was synced, an unwanted peer,
// key or port; the subnets of such a peer get their error in failed
// ("repair disabled: would ...", as the engine reports the entries it
// leaves as found).
func (t *tunnel) diffDevice(dev *wgtypes.Device, desired map[netip.Prefix]want, applied map[wgtypes.Key]bool, synced bool, carry func(netip.Prefix) bool, failed map[netip.Prefix]error) (cfg wgtypes.Config, repairs int, held []string) {
	// hold reports whether the repair what is to be left out.
	hold := func(drift bool, what string, subnets []netip.Prefix) bool {
		if !t.noRepair || !drift {
			return false
		}
		held = append(held, what)
		for _, s := range subnets {
			failed[s] = errors.Join(failed[s], fmt.Errorf("repair disabled: would %s", what))
		}
		return true
	}
	if dev.PrivateKey != t.key.k && !hold(synced, "set the private key of "+t.name, nil) {
		cfg.PrivateKey = t.key.key()
	}
	if dev.ListenPort != t.port && !hold(synced, fmt.Sprintf("set the listen port of %s to %d", t.name, t.port), nil) {
		port := t.port
		cfg.ListenPort = &port
	}
	byKey := groupByKey(desired)
	seen := make(map[wgtypes.Key]bool, len(dev.Peers))
	for i := range dev.Peers {
		have := &dev.Peers[i]
		seen[have.PublicKey] = true
		subnets, ok := byKey[have.PublicKey]
		if !ok && carry != nil && slices.ContainsFunc(have.AllowedIPs, func(a net.IPNet) bool { return carry(ipNetPrefix(a)) }) {
			continue
		}
		if !ok {
			if !hold(synced, "remove peer "+have.PublicKey.String(), nil) {
				cfg.Peers = append(cfg.Peers, wgtypes.PeerConfig{PublicKey: have.PublicKey, Remove: true})
				repairs++
			}
			continue
		}
		pc := t.peerConfig(have.PublicKey, subnets, desired)
		if carry != nil {
			carryOver(have, &pc, carry)
		}
		if !t.matches(have, &pc) && !hold(applied[have.PublicKey], "configure peer "+have.PublicKey.String(), subnets) {
			cfg.Peers = append(cfg.Peers, pc)
			repairs++
		}
	}
	for k, subnets := range byKey {
		if seen[k] || hold(applied[k], "add peer "+k.String(), subnets) {
			continue
		}
		cfg.Peers = append(cfg.Peers, t.peerConfig(k, subnets, desired))
		if applied[k] {
			repairs++
		}
	}
	return cfg, repairs, held
}

// UpdatePeers configures the peers of set and removes those of removed
// in one configuration, touching no other peer (see dataplane.Tunnel).
func (t *tunnel) UpdatePeers(set []dataplane.TunnelPeer, removed []netip.Prefix) map[netip.Prefix]error {
	failed := make(map[netip.Prefix]error)
	t.op.Lock()
	defer t.op.Unlock()
	t.mu.Lock()
	if t.desired == nil {
		t.desired = make(map[netip.Prefix]want)
	}
	touched := make(map[wgtypes.Key]bool)
	for _, s := range removed {
		if old, ok := t.desired[s]; ok {
			touched[old.key] = true
			delete(t.desired, s)
		}
	}
	for _, p := range set {
		if old, ok := t.desired[p.Subnet]; ok {
			touched[old.key] = true
		}
		w, err := wantOf(p)
		if err != nil {
			delete(t.desired, p.Subnet)
			failed[p.Subnet] = err
			continue
		}
		t.desired[p.Subnet] = w
		touched[w.key] = true
	}
	byKey := groupByKey(t.desired)
	var cfg wgtypes.Config
	for k := range touched {
		if subnets, ok := byKey[k]; ok {
			cfg.Peers = append(cfg.Peers, t.peerConfig(k, subnets, t.desired))
		} else {
			cfg.Peers = append(cfg.Peers, wgtypes.PeerConfig{PublicKey: k, Remove: true})
		}
	}
	im := t.impl
	t.mu.Unlock()
	if len(cfg.Peers) == 0 {
		return failed
	}
	if err := im.configure(cfg); err != nil {
		err = fmt.Errorf("configure %s: %w", t.name, err)
		for _, p := range set {
			failed[p.Subnet] = errors.Join(failed[p.Subnet], err)
		}
		return failed
	}
	t.mu.Lock()
	if t.applied == nil {
		t.applied = make(map[wgtypes.Key]bool)
	}
	for k := range touched {
		_, ok := byKey[k]
		t.applied[k] = ok
	}
	t.mu.Unlock()
	return failed
}

// carryOver adds to pc the AllowedIPs of have that carry selects and,
// when there are any, keeps have's endpoint: the part of a peer that the
// other family's engine has not synced yet.
func carryOver(have *wgtypes.Peer, pc *wgtypes.PeerConfig, carry func(netip.Prefix) bool) {
	carried := false
	for _, a := range have.AllowedIPs {
		if carry(ipNetPrefix(a)) {
			pc.AllowedIPs = append(pc.AllowedIPs, a)
			carried = true
		}
	}
	if carried && have.Endpoint != nil {
		pc.Endpoint = have.Endpoint
	}
}

// ipNetPrefix is n as a prefix (an IPv4 one for an IPv4-mapped address).
func ipNetPrefix(n net.IPNet) netip.Prefix {
	a, _ := netip.AddrFromSlice(n.IP)
	ones, _ := n.Mask.Size()
	return netip.PrefixFrom(a.Unmap(), ones)
}

// prefixIPNet is p as a net.IPNet.
func prefixIPNet(p netip.Prefix) net.IPNet {
	return net.IPNet{IP: net.IP(p.Addr().AsSlice()), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}

// otherFamily is 6 for 4, 4 for 6.
func otherFamily(family int) int { return 10 - family }

// wantOf parses a lease's backend data into its peer.
func wantOf(p dataplane.TunnelPeer) (want, error) {
	d, err := ParseBackendData(p.Data)
	if err != nil {
		return want{}, err
	}
	return want{key: d.PublicKey, endpoint: netip.AddrPortFrom(p.PublicIP, uint16(d.Port))}, nil
}

// groupByKey lists, per public key, the subnets that name it, sorted
// (keys of one host may share a key: §3.8).
func groupByKey(desired map[netip.Prefix]want) map[wgtypes.Key][]netip.Prefix {
	out := make(map[wgtypes.Key][]netip.Prefix, len(desired))
	for s, w := range desired {
		out[w.key] = append(out[w.key], s)
	}
	for _, subnets := range out {
		if len(subnets) > 1 {
			slices.SortFunc(subnets, func(a, b netip.Prefix) int { return a.Addr().Compare(b.Addr()) })
		}
	}
	return out
}

// peerConfig is the full configuration of the peer of key k: endpoint
// chosen among its subnets' leases (selectEndpoint), AllowedIPs every
// subnet, the PSK (zero: none) and the keepalive.
func (t *tunnel) peerConfig(k wgtypes.Key, subnets []netip.Prefix, desired map[netip.Prefix]want) wgtypes.PeerConfig {
	psk, keepalive := t.psk, t.keepalive
	var v4, v6 netip.AddrPort
	for _, s := range subnets {
		if s.Addr().Is6() && !v6.IsValid() {
			v6 = desired[s].endpoint
		} else if !s.Addr().Is6() && !v4.IsValid() {
			v4 = desired[s].endpoint
		}
	}
	pc := wgtypes.PeerConfig{
		PublicKey:                   k,
		Endpoint:                    net.UDPAddrFromAddrPort(selectEndpoint(t.mode, v4, v6, t.extV6)),
		PresharedKey:                &psk,
		PersistentKeepaliveInterval: &keepalive,
		ReplaceAllowedIPs:           true,
	}
	for _, s := range subnets {
		pc.AllowedIPs = append(pc.AllowedIPs, prefixIPNet(s))
	}
	return pc
}

// selectEndpoint picks a peer's endpoint of its IPv4 lease (v4) or its
// IPv6 one (v6) as flannel's single device does: Mode ipv4 the IPv4 one,
// ipv6 the IPv6 one; auto the IPv4 one, unless it is a private address
// and both the peer's IPv6 and this host's (extV6) are public. When the
// peer has one family only, that one.
func selectEndpoint(mode string, v4, v6 netip.AddrPort, extV6 netip.Addr) netip.AddrPort {
	switch {
	case !v6.IsValid():
		return v4
	case !v4.IsValid():
		return v6
	case mode == ModeIPv6:
		return v6
	case mode == ModeAuto && v4.Addr().IsPrivate() && !v6.Addr().IsPrivate() && extV6.IsValid() && !extV6.IsPrivate():
		return v6
	}
	return v4
}

// matches reports whether the device's peer is as pc configures it.
func (t *tunnel) matches(have *wgtypes.Peer, pc *wgtypes.PeerConfig) bool {
	if have.Endpoint == nil || have.Endpoint.AddrPort() != pc.Endpoint.AddrPort() {
		return false
	}
	if have.PresharedKey != *pc.PresharedKey || have.PersistentKeepaliveInterval != *pc.PersistentKeepaliveInterval {
		return false
	}
	if len(have.AllowedIPs) != len(pc.AllowedIPs) {
		return false
	}
	for _, a := range have.AllowedIPs {
		if !slices.ContainsFunc(pc.AllowedIPs, func(b net.IPNet) bool { return a.String() == b.String() }) {
			return false
		}
	}
	return true
}

// failAll records err for every desired subnet.
func failAll(failed map[netip.Prefix]error, desired map[netip.Prefix]want, err error) map[netip.Prefix]error {
	for s := range desired {
		failed[s] = err
	}
	return failed
}

// status reports the device and, per subnet, its peer as the device sees
// it. It reads the device (one UAPI or generic netlink request).
func (t *tunnel) status() (backend.WireGuardDevice, map[netip.Prefix]*backend.WireGuardPeer) {
	t.mu.Lock()
	im, c := t.impl, t.chosen
	desired := make(map[netip.Prefix]wgtypes.Key, len(t.desired))
	for s, w := range t.desired {
		desired[s] = w.key
	}
	t.mu.Unlock()
	d := backend.WireGuardDevice{Device: t.name, Impl: c.impl, ImplReason: c.reason, PublicKey: t.key.public().String(), ListenPort: t.port}
	if im == nil {
		return d, nil
	}
	dev, err := im.device()
	if err != nil {
		return d, nil
	}
	byKey := make(map[wgtypes.Key]*backend.WireGuardPeer, len(dev.Peers))
	for i := range dev.Peers {
		p := &dev.Peers[i]
		wp := &backend.WireGuardPeer{PublicKey: p.PublicKey.String(), LatestHandshake: p.LastHandshakeTime, RxBytes: p.ReceiveBytes, TxBytes: p.TransmitBytes}
		if p.Endpoint != nil {
			wp.Endpoint = p.Endpoint.String()
		}
		byKey[p.PublicKey] = wp
	}
	out := make(map[netip.Prefix]*backend.WireGuardPeer, len(desired))
	for s, k := range desired {
		if wp, ok := byKey[k]; ok {
			out[s] = wp
		}
	}
	return d, out
}

// close releases the implementation; the device stays.
func (t *tunnel) close() error {
	t.mu.Lock()
	im := t.impl
	t.mu.Unlock()
	if im == nil {
		return nil
	}
	return im.close()
}
