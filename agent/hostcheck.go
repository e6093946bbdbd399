package agent

import (
	"errors"
	"fmt"
	"net/netip"

	"github.com/vishvananda/netlink"

	"github.com/netagent/netagent/backend/vxlan"
	"github.com/netagent/netagent/backend/wireguard"
	"github.com/netagent/netagent/lease"
)

// ErrProbePortConflict is wrapped by CheckHost's error for a backend whose
// UDP port is the probe responder's.
var ErrProbePortConflict = errors.New("agent: backend port is the probe port")

// ErrUnderlayOverlap is wrapped by CheckHost's error for an overlay network
// that overlaps a subnet of the underlay.
var ErrUnderlayOverlap = errors.New("agent: overlay network overlaps the underlay")

// vxlanKernelPort is the UDP port of a vxlan device created without one
// (Backend.Port 0): Linux's default, not IANA's 4789.
const vxlanKernelPort = 8472

// HostEnv is what a network config is checked against on a host, beyond
// its own fields.
type HostEnv struct {
	// ProbePort is the probe responder's UDP port; 0 when not probing.
	ProbePort int
	// Underlay are subnets directly connected to the host (the agent's
	// external interface, or every interface for `netagent config check`).
	Underlay []Connected
}

// Connected is a subnet directly connected to an interface.
type Connected struct {
	Iface  string
	Prefix netip.Prefix
}

// CheckHost returns what in cfg (already parsed and valid) collides with
// the host, one error each, with the same words wherever it is checked:
//   - the backend's UDP port (vxlan's Port, 8472 when 0) equal to the probe
//     port: the responder could not bind it, or would take the overlay's
//     traffic (wraps ErrProbePortConflict);
//   - an overlay network that contains or lies inside a subnet of the
//     underlay: its routes through the overlay device would override the
//     connected route and cut the host off from that part of the underlay
//     (wraps ErrUnderlayOverlap).
//
// The agent refuses a config with any of them and keeps the one in force;
// `netagent config check/set` refuse the first and warn about the second
// (it may run on another machine than the hosts).
func CheckHost(cfg *lease.Config, env HostEnv) []error {
	var errs []error
	if port := backendPort(cfg); env.ProbePort != 0 && port == env.ProbePort {
		errs = append(errs, fmt.Errorf("%w: Backend.Port %d is the UDP port of the probe responder (--probe-port %d): choose another port for one of them",
			ErrProbePortConflict, port, env.ProbePort))
	}
	for _, n := range []struct {
		field   string
		enabled bool
		net     netip.Prefix
	}{{"Network", cfg.EnableIPv4, cfg.Network}, {"IPv6Network", cfg.EnableIPv6, cfg.IPv6Network}} {
		if !n.enabled || !n.net.IsValid() {
			continue
		}
		for _, c := range env.Underlay {
			if c.Prefix.IsValid() && c.Prefix.Overlaps(n.net) {
				errs = append(errs, fmt.Errorf("%w: %s %s overlaps %s, a subnet of %s (the underlay): the overlay's routes would override the connected route",
					ErrUnderlayOverlap, n.field, n.net, c.Prefix, c.Iface))
			}
		}
	}
	return errs
}

// backendPort is the UDP port the backend of cfg listens on, 0 for none.
func backendPort(cfg *lease.Config) int {
	if cfg.BackendType == wireguard.Type {
		s, err := wireguard.ParseSettings(cfg.Backend)
		if err != nil {
			return 0 // refused by the backend itself
		}
		return s.ListenPort
	}
	if cfg.BackendType != "vxlan" {
		return 0
	}
	s, err := vxlan.ParseSettings(cfg.Backend)
	if err != nil {
		return 0 // refused by the backend itself
	}
	if s.Port == 0 {
		return vxlanKernelPort
	}
	return s.Port
}

// interfaceSubnets returns the subnets of the addresses of the interface
// with index idx (link-local ones aside), as `ip addr show dev <name>`.
func interfaceSubnets(h *netlink.Handle, name string, idx int) ([]Connected, error) {
	link, err := h.LinkByIndex(idx)
	if err != nil {
		return nil, fmt.Errorf("agent: interface %s: %w", name, err)
	}
	addrs, err := h.AddrList(link, netlink.FAMILY_ALL)
	if err != nil {
		return nil, fmt.Errorf("agent: addresses of %s: %w", name, err)
	}
	var out []Connected
	for _, a := range addrs {
		if a.IPNet == nil {
			continue
		}
		ip, ok := netip.AddrFromSlice(a.IPNet.IP)
		if !ok || ip.IsLinkLocalUnicast() {
			continue
		}
		ones, _ := a.IPNet.Mask.Size()
		out = append(out, Connected{Iface: name, Prefix: netip.PrefixFrom(ip.Unmap(), ones).Masked()})
	}
	return out, nil
}
