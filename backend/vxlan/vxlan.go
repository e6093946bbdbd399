// Package vxlan is the VXLAN backend (docs/compatibility.md §5): a flannel.<VNI>
// device on the external interface, and per remote lease a route, a
// permanent neighbour and an fdb entry through it (or, with DirectRouting,
// a plain route to peers on a directly connected subnet).
//
// With IPv6 enabled the IPv6 overlay gets the same over the IPv6 underlay:
// a flannel-v6.<VNI> device whose local address is the interface's IPv6
// address, and per peer (lease IPv6Subnet, PublicIPv6, BackendV6Data) a
// route, neighbour and fdb entry through it. Each family has its own
// reconcile engine; an IPv6-only network has only the IPv6 device.
package vxlan

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"

	"github.com/netagent/netagent/backend"
	"github.com/netagent/netagent/backend/internal/dataplane"
	"github.com/netagent/netagent/lease"
)

// Type is the lease BackendType of this backend.
const Type = "vxlan"

// overhead is what VXLAN encapsulation over IPv4 takes from the external
// MTU: outer IPv4 (20), UDP (8), VXLAN (8) and inner Ethernet (14) headers.
const overhead = 50

// overheadV6 is the same over IPv6: the outer IPv6 header is 40 bytes.
const overheadV6 = 70

// minMTUV6 is the smallest MTU IPv6 allows on a link.
const minMTUV6 = 1280

// maxLinkName is the longest link name the kernel takes (IFNAMSIZ-1).
const maxLinkName = 15

// ErrInvalidConfig is wrapped by every error about the backend's fields.
var ErrInvalidConfig = errors.New("vxlan: invalid backend config")

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
	// v4 and v6 are the enabled families; mac and macV6 their devices'
	// MACs (nil for a disabled family).
	v4, v6     bool
	mac, macV6 net.HardwareAddr
	mtu        int
	engines    dataplane.Group
}

var _ backend.Backend = (*Backend)(nil)

// Validate checks the backend fields of cfg as New will (ParseSettings).
func Validate(cfg *lease.Config) error {
	_, err := ParseSettings(cfg.Backend)
	return err
}

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
	if s.VNI, err = backend.IntField(ErrInvalidConfig, "VNI", j.VNI, 1, 0, 1<<24-1); err != nil {
		return s, err
	}
	if name := DeviceName(s.VNI); len(name) > maxLinkName {
		// VNIs of 8 digits would need a device name the kernel refuses.
		return s, fmt.Errorf("%w: VNI %d: the device name %q is longer than %d bytes", ErrInvalidConfig, s.VNI, name, maxLinkName)
	}
	if s.Port, err = backend.IntField(ErrInvalidConfig, "Port", j.Port, 0, 0, 65535); err != nil {
		return s, err
	}
	if s.MTU, err = backend.IntField(ErrInvalidConfig, "MTU", j.MTU, 0, 0, 65535); err != nil {
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

// VtepMAC derives the device's MAC from the public IP and VNI, so that it
// is the same across re-creations of the device and restarts of the agent
// without any state file: the first 6 bytes of
// SHA-256("netagent-vtep|<ip>|<vni>"), locally administered, unicast.
// The IPv4 device's MAC comes from PublicIP, the IPv6 device's from
// PublicIPv6.
func VtepMAC(publicIP netip.Addr, vni int) net.HardwareAddr {
	sum := sha256.Sum256([]byte("netagent-vtep|" + publicIP.String() + "|" + strconv.Itoa(vni)))
	mac := net.HardwareAddr(sum[:6])
	mac[0] = (mac[0] | 0x02) &^ 0x01
	return mac
}

// New parses and validates the backend fields and computes the VTEP MACs
// of the enabled families. It does not touch the kernel.
func New(opts backend.Options) (*Backend, error) {
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
	ext := opts.Ext
	if ext.Index <= 0 {
		return nil, fmt.Errorf("vxlan: external interface %q has no index", ext.Name)
	}
	b := &Backend{settings: s}
	b.v4, b.v6 = dataplane.Families(opts.Config)
	if b.v4 {
		if !ext.Addr.Is4() {
			return nil, fmt.Errorf("vxlan: external interface %s has no IPv4 address", ext.Name)
		}
		if !ext.PublicIP.Is4() {
			return nil, fmt.Errorf("vxlan: public IP %s is not an IPv4 address", ext.PublicIP)
		}
		b.mac = VtepMAC(ext.PublicIP, s.VNI)
	}
	if b.v6 {
		if !ext.AddrV6.Is6() || ext.AddrV6.Is4In6() {
			return nil, fmt.Errorf("vxlan: EnableIPv6 is set but external interface %s has no IPv6 address", ext.Name)
		}
		if !ext.PublicIPv6.Is6() || ext.PublicIPv6.Is4In6() {
			return nil, fmt.Errorf("vxlan: public IPv6 %s is not an IPv6 address", ext.PublicIPv6)
		}
		b.macV6 = VtepMAC(ext.PublicIPv6, s.VNI)
		if name := DeviceNameV6(s.VNI); len(name) > maxLinkName {
			return nil, fmt.Errorf("%w: VNI %d: the IPv6 device name %q is longer than %d bytes", ErrInvalidConfig, s.VNI, name, maxLinkName)
		}
	}
	base := s.MTU
	if base == 0 {
		base = ext.MTU
	}
	mtu4, mtu6 := base-overhead, base-overheadV6
	if b.v4 && mtu4 < 68 {
		return nil, fmt.Errorf("vxlan: MTU %d of %s leaves %d after the VXLAN overhead", base, ext.Name, mtu4)
	}
	if b.v6 && mtu6 < minMTUV6 {
		return nil, fmt.Errorf("vxlan: MTU %d of %s leaves %d after the VXLAN-over-IPv6 overhead, below IPv6's minimum %d", base, ext.Name, mtu6, minMTUV6)
	}
	// Containers get one MTU (FLANNEL_MTU): with both families, the one
	// that fits both overlays.
	b.mtu = mtu4
	if b.v6 {
		b.mtu = mtu6
	}
	cfg := dataplane.Config{
		Log:            opts.Log,
		Handle:         opts.Handle,
		Netns:          opts.Netns,
		Ext:            ext,
		Type:           Type,
		DirectRouting:  s.DirectRouting,
		ParseMAC:       ParseBackendData,
		IdentityName:   "VtepMAC",
		IPv4:           b.v4,
		IPv6:           b.v6,
		ResyncInterval: opts.ResyncInterval,
		MTU:            b.mtu,
		NoRepair:       opts.NoRepair,
	}
	device := func(name string, mtu int, mac net.HardwareAddr) *dataplane.DeviceSpec {
		return &dataplane.DeviceSpec{Name: name, VNI: s.VNI, Port: s.Port, MTU: mtu, MAC: mac, Learning: s.Learning, GBP: s.GBP}
	}
	if b.v4 {
		c := cfg
		c.Family, c.Device = 4, device(DeviceName(s.VNI), mtu4, b.mac)
		c.Network, c.SubnetLen = opts.Config.Network, opts.Config.SubnetLen
		b.engines.Add(dataplane.New(c))
	}
	if b.v6 {
		c := cfg
		c.Family, c.Device = 6, device(DeviceNameV6(s.VNI), mtu6, b.macV6)
		c.Network, c.SubnetLen = opts.Config.IPv6Network, opts.Config.IPv6SubnetLen
		if c.Log != nil {
			c.Log = c.Log.With("family", "ipv6")
		}
		b.engines.Add(dataplane.New(c))
	}
	return b, nil
}

// DeviceName is the device for a VNI: "flannel.<VNI>".
func DeviceName(vni int) string { return "flannel." + strconv.Itoa(vni) }

// DeviceNameV6 is the IPv6 overlay's device for a VNI: "flannel-v6.<VNI>".
func DeviceNameV6(vni int) string { return "flannel-v6." + strconv.Itoa(vni) }

// Type returns "vxlan".
func (b *Backend) Type() string { return Type }

// MTU is the MTU containers get: the backend MTU (or the external MTU)
// minus 50 for an IPv4-only network, minus 70 (the IPv6 device's MTU)
// when IPv6 is enabled, so that one MTU fits both overlays.
func (b *Backend) MTU() int { return b.mtu }

// Settings returns the parsed backend fields.
func (b *Backend) Settings() Settings { return b.settings }

// VtepMAC is this host's IPv4 VTEP MAC (nil without IPv4).
func (b *Backend) VtepMAC() net.HardwareAddr { return b.mac }

// VtepMACV6 is this host's IPv6 VTEP MAC (nil without IPv6).
func (b *Backend) VtepMACV6() net.HardwareAddr { return b.macV6 }

// leaseData is the vxlan BackendData, as flannel writes it.
type leaseData struct {
	VNI     int
	VtepMAC string
}

// BackendData returns {"VNI":<vni>,"VtepMAC":"<mac>"}, or nil without
// IPv4.
func (b *Backend) BackendData() (json.RawMessage, error) {
	if !b.v4 {
		return nil, nil
	}
	return json.Marshal(leaseData{VNI: b.settings.VNI, VtepMAC: b.mac.String()})
}

// BackendV6Data returns {"VNI":<vni>,"VtepMAC":"<IPv6 device's mac>"}, or
// nil without IPv6.
func (b *Backend) BackendV6Data() (json.RawMessage, error) {
	if !b.v6 {
		return nil, nil
	}
	return json.Marshal(leaseData{VNI: b.settings.VNI, VtepMAC: b.macV6.String()})
}

// ParseBackendData extracts the VTEP MAC from a peer's BackendData (or
// BackendV6Data); it must be a unicast, non-zero Ethernet address.
func ParseBackendData(data []byte) (net.HardwareAddr, error) {
	if len(data) == 0 {
		return nil, errors.New("vxlan: no BackendData")
	}
	var d struct{ VtepMAC string }
	if m, ok := canonicalVtepMAC(data); ok {
		d.VtepMAC = m
	} else if err := json.Unmarshal(data, &d); err != nil {
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

// canonicalVtepMAC reads the VtepMAC of BackendData written exactly as
// netagent and flannel write it, {"VNI":<n>,"VtepMAC":"<mac>"}, without
// the JSON decoder (a cold start parses thousands); ok is false for any
// other form, which then goes to the decoder. Where ok is true, the
// decoder would find the same string.
func canonicalVtepMAC(data []byte) (mac string, ok bool) {
	rest, ok := bytes.CutPrefix(data, []byte(`{"VNI":`))
	if !ok {
		return "", false
	}
	n := 0
	for n < len(rest) && rest[n] >= '0' && rest[n] <= '9' {
		n++
	}
	if n == 0 || n > 10 || (n > 1 && rest[0] == '0') {
		return "", false
	}
	rest, ok = bytes.CutPrefix(rest[n:], []byte(`,"VtepMAC":"`))
	if !ok {
		return "", false
	}
	m, ok := bytes.CutSuffix(rest, []byte(`"}`))
	if !ok {
		return "", false
	}
	for _, c := range m {
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F' || c == ':' || c == '-' || c == '.') {
			return "", false
		}
	}
	return string(m), true
}

// Run programs the device and the peers' entries until ctx is done (see
// backend.Backend).
func (b *Backend) Run(ctx context.Context, updates <-chan backend.Update) error {
	return b.engines.Run(ctx, updates)
}

// Status is a snapshot of the data plane.
func (b *Backend) Status() backend.Status { return b.engines.Status() }

// Ready is closed when the first pass of every family has finished.
func (b *Backend) Ready() <-chan struct{} { return b.engines.Ready() }
