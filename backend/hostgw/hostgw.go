// Package hostgw is the host-gw backend (docs/compatibility.md §6): per remote lease
// a route to its subnet via its public IP on the external interface. Peers
// must be on a directly connected subnet; one that is not is reported and
// left out. With IPv6 enabled, the same for the IPv6 overlay: a route to
// each peer's IPv6 subnet via its public IPv6 address.
package hostgw

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"

	"github.com/vishvananda/netlink"

	"github.com/netagent/netagent/backend"
	"github.com/netagent/netagent/backend/internal/dataplane"
)

// Type is the lease BackendType of this backend.
const Type = "host-gw"

// ErrPublicIPNotLocal is matched (errors.Is) by the error New returns when
// the public IP is not an address of the external interface (NAT): peers
// could not route to it.
var ErrPublicIPNotLocal = errors.New("host-gw: public IP is not an address of the external interface")

type notLocalError struct {
	ip  netip.Addr
	ext string
}

func (e *notLocalError) Error() string {
	return fmt.Sprintf("host-gw: public IP %s is not an address of %s (NAT?)", e.ip, e.ext)
}

func (e *notLocalError) Is(target error) bool { return target == ErrPublicIPNotLocal }

// Backend is the host-gw data plane.
type Backend struct {
	mtu     int
	engines dataplane.Group
}

var _ backend.Backend = (*Backend)(nil)

// New checks that Ext.PublicIP (and Ext.PublicIPv6 when IPv6 is enabled)
// is an address of Ext (not behind NAT).
//
// Equivalent to: `ip -4 addr show dev <ext>`, `ip -6 addr show dev <ext>`.
func New(opts backend.Options) (*Backend, error) {
	if opts.Handle == nil {
		return nil, errors.New("host-gw: Options.Handle is nil")
	}
	if opts.Config == nil {
		return nil, errors.New("host-gw: Options.Config is nil")
	}
	v4, v6 := dataplane.Families(opts.Config)
	if v4 {
		if !opts.Ext.PublicIP.Is4() {
			return nil, fmt.Errorf("host-gw: public IP %s is not an IPv4 address", opts.Ext.PublicIP)
		}
		if err := checkLocal(opts, opts.Ext.PublicIP, netlink.FAMILY_V4); err != nil {
			return nil, err
		}
	}
	if v6 {
		if !opts.Ext.PublicIPv6.Is6() || opts.Ext.PublicIPv6.Is4In6() {
			return nil, fmt.Errorf("host-gw: EnableIPv6 is set but %s has no public IPv6 address", opts.Ext.Name)
		}
		if err := checkLocal(opts, opts.Ext.PublicIPv6, netlink.FAMILY_V6); err != nil {
			return nil, err
		}
	}
	b := &Backend{mtu: opts.Ext.MTU}
	cfg := dataplane.Config{
		Log:            opts.Log,
		Handle:         opts.Handle,
		Netns:          opts.Netns,
		Ext:            opts.Ext,
		Type:           Type,
		IPv4:           v4,
		IPv6:           v6,
		ResyncInterval: opts.ResyncInterval,
		MTU:            b.mtu,
		NoRepair:       opts.NoRepair,
	}
	if v4 {
		c := cfg
		c.Family, c.Network, c.SubnetLen = 4, opts.Config.Network, opts.Config.SubnetLen
		b.engines.Add(dataplane.New(c))
	}
	if v6 {
		c := cfg
		c.Family, c.Network, c.SubnetLen = 6, opts.Config.IPv6Network, opts.Config.IPv6SubnetLen
		if c.Log != nil {
			c.Log = c.Log.With("family", "ipv6")
		}
		b.engines.Add(dataplane.New(c))
	}
	return b, nil
}

// checkLocal returns a notLocalError unless ip is an address of the
// external interface.
func checkLocal(opts backend.Options, ip netip.Addr, family int) error {
	link := &netlink.Device{LinkAttrs: netlink.LinkAttrs{Index: opts.Ext.Index, Name: opts.Ext.Name}}
	addrs, err := backend.RetryDump(func() ([]netlink.Addr, error) { return opts.Handle.AddrList(link, family) })
	if err != nil {
		return fmt.Errorf("host-gw: list addresses of %s: %w", opts.Ext.Name, err)
	}
	for _, a := range addrs {
		if have, ok := netip.AddrFromSlice(a.IP); ok && have.Unmap() == ip {
			return nil
		}
	}
	return &notLocalError{ip: ip, ext: opts.Ext.Name}
}

// Type returns "host-gw".
func (b *Backend) Type() string { return Type }

// MTU is the external interface's MTU.
func (b *Backend) MTU() int { return b.mtu }

// BackendData is nil: host-gw leases carry none.
func (b *Backend) BackendData() (json.RawMessage, error) { return nil, nil }

// BackendV6Data is nil: host-gw leases carry none.
func (b *Backend) BackendV6Data() (json.RawMessage, error) { return nil, nil }

// Run programs the peers' routes until ctx is done (see backend.Backend).
func (b *Backend) Run(ctx context.Context, updates <-chan backend.Update) error {
	return b.engines.Run(ctx, updates)
}

// Status is a snapshot of the data plane.
func (b *Backend) Status() backend.Status { return b.engines.Status() }

// Ready is closed when the first pass of every family has finished.
func (b *Backend) Ready() <-chan struct{} { return b.engines.Ready() }
