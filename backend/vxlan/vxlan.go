// Package vxlan is the VXLAN backend (SPEC section 3): a flannel.<VNI>
// device on the external interface, and per remote lease a route, a
// permanent neighbour and an fdb entry through it (or, with DirectRouting,
// a plain route to peers on a directly connected subnet).
package vxlan

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strconv"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/netagent/netagent/backend"
	"github.com/netagent/netagent/backend/internal/dataplane"
	"github.com/netagent/netagent/iface"
	"github.com/netagent/netagent/subnet"
)

// Type is the lease BackendType of this backend.
const Type = "vxlan"

// overhead is what VXLAN encapsulation takes from the external MTU.
const overhead = 50

// ErrInvalidConfig is wrapped by every error about the backend's fields.
var ErrInvalidConfig = errors.New("vxlan: invalid backend config")

// Options configures a Backend.
type Options struct {
	Log *slog.Logger
	// Handle does all netlink work (netlink.NewHandleAt(ns) in tests).
	Handle *netlink.Handle
	// Netns is the namespace Handle works in, for netlink subscriptions;
	// 0 or netns.None() means the current one.
	Netns netns.NsHandle
	// Ext is the underlay interface, its address and the public IP.
	Ext iface.External
	// Config is the network config; its Backend object holds VNI, Port,
	// MTU, GBP, Learning and DirectRouting.
	Config *subnet.Config
	// ResyncInterval is the period of full reconcile passes (default 30s).
	ResyncInterval time.Duration
}

// Settings are the backend fields of the network config.
type Settings struct {
	VNI           int
	Port          int
	MTU           int
	GBP           bool
	Learning      bool
	DirectRouting bool
}

// Backend is the VXLAN data plane.
type Backend struct {
	settings Settings
	mac      net.HardwareAddr
	mtu      int
	engine   *dataplane.Engine
}

var _ backend.Backend = (*Backend)(nil)

// ParseSettings parses and validates the backend object of the network
// config (field names match case-insensitively); errors name the field.
func ParseSettings(raw json.RawMessage) (Settings, error) {
	var j struct {
		Type          string
		VNI           *json.Number
		Port          *json.Number
		MTU           *json.Number
		GBP           *bool
		Learning      *bool
		DirectRouting *bool
	}
	s := Settings{VNI: 1}
	if len(raw) == 0 {
		return s, nil
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	if err := dec.Decode(&j); err != nil {
		return s, fmt.Errorf("%w: %v", ErrInvalidConfig, err)
	}
	if j.Type != "" && j.Type != Type {
		return s, fmt.Errorf("%w: Type %q is not %q", ErrInvalidConfig, j.Type, Type)
	}
	var err error
	if s.VNI, err = intField("VNI", j.VNI, 1, 0, 1<<24-1); err != nil {
		return s, err
	}
	if s.Port, err = intField("Port", j.Port, 0, 0, 65535); err != nil {
		return s, err
	}
	if s.MTU, err = intField("MTU", j.MTU, 0, 0, 65535); err != nil {
		return s, err
	}
	if s.MTU != 0 && s.MTU-overhead < 68 {
		return s, fmt.Errorf("%w: MTU %d leaves less than 68 bytes after the %d bytes of VXLAN overhead", ErrInvalidConfig, s.MTU, overhead)
	}
	s.GBP = j.GBP != nil && *j.GBP
	s.Learning = j.Learning != nil && *j.Learning
	s.DirectRouting = j.DirectRouting != nil && *j.DirectRouting
	return s, nil
}

func intField(name string, n *json.Number, def, lo, hi int) (int, error) {
	if n == nil {
		return def, nil
	}
	v, err := strconv.Atoi(n.String())
	if err != nil {
		return 0, fmt.Errorf("%w: %s %s is not an integer", ErrInvalidConfig, name, n)
	}
	if v < lo || v > hi {
		return 0, fmt.Errorf("%w: %s %d is out of range [%d, %d]", ErrInvalidConfig, name, v, lo, hi)
	}
	return v, nil
}

// VtepMAC derives the device's MAC from the public IP and VNI, so that it
// is the same across re-creations of the device and restarts of the agent
// without any state file: the first 6 bytes of
// SHA-256("netagent-vtep|<ip>|<vni>"), locally administered, unicast.
func VtepMAC(publicIP netip.Addr, vni int) net.HardwareAddr {
	sum := sha256.Sum256([]byte("netagent-vtep|" + publicIP.String() + "|" + strconv.Itoa(vni)))
	mac := net.HardwareAddr(sum[:6])
	mac[0] = (mac[0] | 0x02) &^ 0x01
	return mac
}

// New parses and validates the backend fields and computes the VTEP MAC.
// It does not touch the kernel.
func New(opts Options) (*Backend, error) {
	if opts.Handle == nil {
		return nil, errors.New("vxlan: Options.Handle is nil")
	}
	if opts.Config == nil {
		return nil, errors.New("vxlan: Options.Config is nil")
	}
	s, err := ParseSettings(opts.Config.Backend)
	if err != nil {
		return nil, err
	}
	if !opts.Ext.Addr.Is4() {
		return nil, fmt.Errorf("vxlan: external interface %s has no IPv4 address", opts.Ext.Name)
	}
	if !opts.Ext.PublicIP.Is4() {
		return nil, fmt.Errorf("vxlan: public IP %s is not an IPv4 address", opts.Ext.PublicIP)
	}
	if opts.Ext.Index <= 0 {
		return nil, fmt.Errorf("vxlan: external interface %q has no index", opts.Ext.Name)
	}
	base := s.MTU
	if base == 0 {
		base = opts.Ext.MTU
	}
	mtu := base - overhead
	if mtu < 68 {
		return nil, fmt.Errorf("vxlan: MTU %d of %s leaves %d after the VXLAN overhead", base, opts.Ext.Name, mtu)
	}
	b := &Backend{settings: s, mac: VtepMAC(opts.Ext.PublicIP, s.VNI), mtu: mtu}
	b.engine = dataplane.New(dataplane.Config{
		Log:    opts.Log,
		Handle: opts.Handle,
		Netns:  opts.Netns,
		Ext:    opts.Ext,
		Type:   Type,
		Device: &dataplane.DeviceSpec{
			Name:     DeviceName(s.VNI),
			VNI:      s.VNI,
			Port:     s.Port,
			MTU:      mtu,
			MAC:      b.mac,
			Learning: s.Learning,
			GBP:      s.GBP,
		},
		DirectRouting:  s.DirectRouting,
		ParseMAC:       ParseBackendData,
		ResyncInterval: opts.ResyncInterval,
		MTU:            mtu,
	})
	return b, nil
}

// DeviceName is the device for a VNI: "flannel.<VNI>".
func DeviceName(vni int) string { return "flannel." + strconv.Itoa(vni) }

// Type returns "vxlan".
func (b *Backend) Type() string { return Type }

// MTU is the device MTU: backend MTU (or the external MTU) minus 50.
func (b *Backend) MTU() int { return b.mtu }

// Settings returns the parsed backend fields.
func (b *Backend) Settings() Settings { return b.settings }

// VtepMAC is this host's VTEP MAC.
func (b *Backend) VtepMAC() net.HardwareAddr { return b.mac }

// leaseData is the vxlan BackendData, as flannel writes it.
type leaseData struct {
	VNI     int
	VtepMAC string
}

// BackendData returns {"VNI":<vni>,"VtepMAC":"<mac>"}.
func (b *Backend) BackendData() (json.RawMessage, error) {
	return json.Marshal(leaseData{VNI: b.settings.VNI, VtepMAC: b.mac.String()})
}

// ParseBackendData extracts the VTEP MAC from a peer's BackendData; it
// must be a unicast, non-zero Ethernet address.
func ParseBackendData(data []byte) (net.HardwareAddr, error) {
	if len(data) == 0 {
		return nil, errors.New("vxlan: no BackendData")
	}
	var d struct{ VtepMAC string }
	if err := json.Unmarshal(data, &d); err != nil {
		return nil, fmt.Errorf("vxlan: BackendData: %w", err)
	}
	mac, err := net.ParseMAC(d.VtepMAC)
	if err != nil {
		return nil, fmt.Errorf("vxlan: BackendData VtepMAC: %w", err)
	}
	if len(mac) != 6 {
		return nil, fmt.Errorf("vxlan: BackendData VtepMAC %s is not an Ethernet address", mac)
	}
	if mac[0]&1 != 0 || bytes.Equal(mac, make([]byte, 6)) {
		return nil, fmt.Errorf("vxlan: BackendData VtepMAC %s is not a unicast address", mac)
	}
	return mac, nil
}

// Run programs the device and the peers' entries until ctx is done (see
// backend.Backend).
func (b *Backend) Run(ctx context.Context, updates <-chan backend.Update) error {
	return b.engine.Run(ctx, updates)
}

// Status is a snapshot of the data plane.
func (b *Backend) Status() backend.Status { return b.engine.Status() }
