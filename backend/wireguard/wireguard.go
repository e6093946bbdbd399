// Package wireguard is the WireGuard backend (docs/compatibility.md §9,
// SPEC §7): an encrypted overlay. Each address family has a device
// (flannel-wg, flannel-wg-v6) with the lease's network address, one route
// for the whole overlay network through it, and a WireGuard peer per remote
// lease: endpoint PublicIP:Port, AllowedIPs its subnet. The device is the
// kernel's WireGuard when the kernel has it, or wireguard-go in the agent
// over a persistent TUN device of the same name (--wireguard-impl); the
// reconcile engine (backend/internal/dataplane) drives both the same way.
//
// The private key is generated once and kept in a file of mode 0600
// (/run/flannel/wgkey, WIREGUARD_KEY_FILE overrides); only the public key
// goes to the lease, as flannel publishes it:
// {"PublicKey":"<base64>","Port":51820}.
package wireguard

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/netagent/netagent/backend"
	"github.com/netagent/netagent/backend/internal/dataplane"
)

// Type is the lease BackendType of this backend.
const Type = "wireguard"

// overhead is what WireGuard takes from the external MTU, as flannel
// counts it: outer IPv6 header (40, the larger of the two), UDP (8) and
// WireGuard's header and tag (32).
const overhead = 80

// minMTUV6 is the smallest MTU IPv6 allows on a link.
const minMTUV6 = 1280

// Device names (flannel's).
const (
	DeviceName   = "flannel-wg"
	DeviceNameV6 = "flannel-wg-v6"
)

// Options are the agent's settings for the backend, beside the network
// config's.
type Options struct {
	// Impl is ImplAuto (default), ImplKernel or ImplUserspace.
	Impl string
	// SocketDir holds the userspace devices' UAPI sockets (default
	// DefaultSocketDir).
	SocketDir string
	// KeyFile is the private key's file (default DefaultKeyFile).
	KeyFile string
}

// Backend is the WireGuard data plane.
type Backend struct {
	settings Settings
	v4, v6   bool
	mtu      int
	key      privateKey
	// tunnels are the devices, IPv4's first.
	tunnels []*tunnel
	h       *netlink.Handle
	log     *slog.Logger
	engines dataplane.Group
}

var _ backend.Backend = (*Backend)(nil)

// Factory returns the constructor of Kind.New for wo.
func Factory(wo Options) func(backend.Options) (*Backend, error) {
	return func(opts backend.Options) (*Backend, error) { return New(opts, wo) }
}

// New parses the backend fields, and reads the private key from its file
// or generates it there. It does not touch the kernel.
func New(opts backend.Options, wo Options) (*Backend, error) {
	if opts.Handle == nil {
		return nil, errors.New("wireguard: Options.Handle is nil")
	}
	if opts.Config == nil {
		return nil, errors.New("wireguard: Options.Config is nil")
	}
	if _, err := choose(wo.Impl, "tuntap", nil); err != nil {
		return nil, err
	}
	s, err := ParseSettings(opts.Config.Backend)
	if err != nil {
		return nil, err
	}
	if wo.SocketDir == "" {
		wo.SocketDir = DefaultSocketDir
	}
	if wo.KeyFile == "" {
		wo.KeyFile = DefaultKeyFile
	}
	log := opts.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	b := &Backend{settings: s, h: opts.Handle, log: log}
	b.v4, b.v6 = dataplane.Families(opts.Config)
	ext := opts.Ext
	if b.v4 && !ext.PublicIP.Is4() {
		return nil, fmt.Errorf("wireguard: public IP %s is not an IPv4 address", ext.PublicIP)
	}
	if b.v6 && (!ext.PublicIPv6.Is6() || ext.PublicIPv6.Is4In6()) {
		return nil, fmt.Errorf("wireguard: EnableIPv6 is set but the public IPv6 %s is not an IPv6 address", ext.PublicIPv6)
	}
	base := s.MTU
	if base == 0 {
		base = ext.MTU
	}
	b.mtu = base - overhead
	if b.mtu < 68 || (b.v6 && b.mtu < minMTUV6) {
		return nil, fmt.Errorf("wireguard: MTU %d of %s leaves %d after the WireGuard overhead of %d", base, ext.Name, b.mtu, overhead)
	}
	if b.key, err = loadOrCreateKey(wo.KeyFile, log); err != nil {
		return nil, err
	}
	cfg := dataplane.Config{
		Log:            log,
		Handle:         opts.Handle,
		Netns:          opts.Netns,
		Ext:            ext,
		Type:           Type,
		Identity:       identity,
		IdentityName:   "PublicKey",
		IPv4:           b.v4,
		IPv6:           b.v6,
		ResyncInterval: opts.ResyncInterval,
		MTU:            b.mtu,
		NoRepair:       opts.NoRepair,
	}
	newTunnel := func(name string, family, port int, tlog *slog.Logger) *tunnel {
		t := &tunnel{
			name: name, mtu: b.mtu, port: port, key: b.key,
			keepalive: time.Duration(s.PersistentKeepaliveInterval) * time.Second,
			implFlag:  wo.Impl, socketDir: wo.SocketDir,
			h: opts.Handle, netns: opts.Netns, log: tlog,
			mode: s.Mode, extV6: ext.PublicIPv6,
			family: family, noRepair: opts.NoRepair,
		}
		if s.PSK != nil {
			t.psk = *s.PSK
		}
		b.tunnels = append(b.tunnels, t)
		return t
	}
	// One device for both families (flannel's Mode auto, ipv4, ipv6):
	// flannel-wg on ListenPort, each engine programming its family's
	// addresses, route and AllowedIPs on it.
	var shared *tunnel
	if b.v4 && b.v6 && s.Mode != ModeSeparate {
		shared = newTunnel(DeviceName, 0, s.ListenPort, log)
	}
	if b.v4 {
		c := cfg
		c.Family, c.Tunnel = 4, familyTunnel{shared, false}
		if shared == nil {
			c.Tunnel = newTunnel(DeviceName, 4, s.ListenPort, log)
		}
		c.Network, c.SubnetLen = opts.Config.Network, opts.Config.SubnetLen
		b.engines.Add(dataplane.New(c))
	}
	if b.v6 {
		l6 := log.With("family", "ipv6")
		c := cfg
		c.Family, c.Tunnel, c.Log = 6, familyTunnel{shared, true}, l6
		if shared == nil {
			c.Tunnel = newTunnel(DeviceNameV6, 6, s.ListenPortV6, l6)
		}
		c.Network, c.SubnetLen = opts.Config.IPv6Network, opts.Config.IPv6SubnetLen
		b.engines.Add(dataplane.New(c))
	}
	return b, nil
}

// single reports whether one device serves both families.
func (b *Backend) single() bool { return b.v4 && b.v6 && b.settings.Mode != ModeSeparate }

// Type returns "wireguard".
func (b *Backend) Type() string { return Type }

// MTU is the MTU containers get: the backend MTU (or the external MTU)
// minus 80.
func (b *Backend) MTU() int { return b.mtu }

// Settings returns the parsed backend fields.
func (b *Backend) Settings() Settings { return b.settings }

// PublicKey is this host's public key (base64).
func (b *Backend) PublicKey() string { return b.key.public().String() }

// BackendData returns {"PublicKey":"<base64>","Port":<ListenPort>}, or nil
// without IPv4.
func (b *Backend) BackendData() (json.RawMessage, error) {
	if !b.v4 {
		return nil, nil
	}
	return json.Marshal(PeerData{PublicKey: b.key.public(), Port: b.settings.ListenPort})
}

// BackendV6Data returns {"PublicKey":"<base64>","Port":<ListenPortV6>},
// or nil without IPv6. With one device for both families the port is
// the one it listens on, ListenPort (flannel publishes ListenPortV6
// there too, where nothing listens).
func (b *Backend) BackendV6Data() (json.RawMessage, error) {
	if !b.v6 {
		return nil, nil
	}
	port := b.settings.ListenPortV6
	if b.single() {
		port = b.settings.ListenPort
	}
	return json.Marshal(PeerData{PublicKey: b.key.public(), Port: port})
}

// Run programs the devices and peers until ctx is done (see
// backend.Backend). The devices stay when it returns: a kernel device with
// its peers, a userspace device's TUN with its address and route.
func (b *Backend) Run(ctx context.Context, updates <-chan backend.Update) error {
	b.removeUnused()
	err := b.engines.Run(ctx, updates)
	for _, t := range b.tunnels {
		if cerr := t.close(); cerr != nil {
			err = errors.Join(err, cerr)
		}
	}
	return err
}

// Ready is closed when the first pass of every family has finished.
func (b *Backend) Ready() <-chan struct{} { return b.engines.Ready() }

// Status is a snapshot of the data plane, with each device's public key
// and implementation and, per peer, what the device reports of it
// (handshake, bytes, endpoint). It reads the devices.
func (b *Backend) Status() backend.Status {
	st := b.engines.Status()
	peers := make([]backend.PeerStatus, len(st.Peers))
	copy(peers, st.Peers)
	for _, t := range b.tunnels {
		d, byNet := t.status()
		st.WireGuard = append(st.WireGuard, d)
		v6 := t.name == DeviceNameV6
		for j := range peers {
			if b.single() || peers[j].Subnet.Addr().Is6() == v6 {
				peers[j].WireGuard = byNet[peers[j].Subnet]
			}
		}
	}
	st.Peers = peers
	return st
}

// removeUnused deletes the devices of the backend's naming (flannel-wg,
// flannel-wg-v6) that the current Mode and families do not use, with
// their peers, address and route: what a run with another Mode left (a
// switch from Mode separate to one device leaves flannel-wg-v6). Only a
// WireGuard device or a TUN is deleted, never another link of the name.
// A failure is logged: the devices in use do not depend on it.
//
// Equivalent to: `ip link del flannel-wg-v6`.
func (b *Backend) removeUnused() {
	for _, name := range []string{DeviceName, DeviceNameV6} {
		if slices.ContainsFunc(b.tunnels, func(t *tunnel) bool { return t.name == name }) {
			continue
		}
		l, err := b.h.LinkByName(name)
		if err != nil {
			var nf netlink.LinkNotFoundError
			if !errors.As(err, &nf) {
				b.log.Warn("cannot look up an unused WireGuard device", "device", name, "err", err)
			}
			continue
		}
		if typ := l.Type(); typ != "wireguard" && typ != "tuntap" {
			b.log.Warn("link of a WireGuard device's name left in place: not a WireGuard device", "device", name, "type", typ)
			continue
		}
		if err := b.h.LinkDel(l); err != nil && !backend.IsNotFound(err) {
			b.log.Warn("cannot delete an unused WireGuard device", "device", name, "err", err)
			continue
		}
		b.log.Info("unused WireGuard device deleted", "device", name, "mode", b.settings.Mode)
	}
}
