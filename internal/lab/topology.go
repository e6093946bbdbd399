package lab

import (
	"context"
	"fmt"
	"net/netip"
)

// build creates the namespaces and wires the underlay (see the package
// documentation). afterStep, if not nil, may fail the build after a step.
func (l *Lab) build(ctx context.Context, routed bool, afterStep func(*Lab, string) error) error {
	step := func(name string, f func() error) error {
		if err := f(); err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		if afterStep != nil {
			return afterStep(l, name)
		}
		return nil
	}
	sw, rt, et := l.SwitchNS(), l.RouterNS(), l.EtcdNS()
	steps := []struct {
		name string
		f    func() error
	}{
		{"namespaces", func() error {
			for _, ns := range []string{sw, rt, et} {
				if err := l.addNS(ctx, ns); err != nil {
					return err
				}
			}
			for _, h := range l.hosts {
				if err := l.addNS(ctx, h.NS); err != nil {
					return err
				}
			}
			if l.hasV6() {
				// Before any link exists in them, so that every
				// address (cni0's, the agent's) is usable at once.
				for _, ns := range append([]string{sw, rt, et}, l.hostNamespaces()...) {
					if err := l.noDAD(ctx, ns); err != nil {
						return err
					}
				}
			}
			return nil
		}},
		{"switch", func() error { return l.buildSwitch(ctx, routed) }},
		{"router", func() error {
			cmds := l.underlayCmds("eth0", netip.PrefixFrom(GatewayA, UnderlayA.Bits()), netip.PrefixFrom(GatewayA6, UnderlayA6.Bits()), netip.Addr{}, netip.Addr{})
			if routed {
				cmds = append(cmds, l.underlayCmds("eth1", netip.PrefixFrom(GatewayB, UnderlayB.Bits()), netip.PrefixFrom(GatewayB6, UnderlayB6.Bits()), netip.Addr{}, netip.Addr{})...)
			}
			if err := l.ipBatch(ctx, rt, cmds...); err != nil {
				return err
			}
			return l.forwarding(ctx, rt)
		}},
		{"etcd", func() error {
			return l.ipBatch(ctx, et, l.underlayCmds("eth0",
				netip.PrefixFrom(EtcdAddr, UnderlayA.Bits()), netip.PrefixFrom(EtcdAddrV6, UnderlayA6.Bits()), GatewayA, GatewayA6)...)
		}},
		{"hosts", func() error {
			for _, h := range l.hosts {
				if err := l.ipBatch(ctx, h.NS, l.underlayCmds("eth0", h.Underlay, h.UnderlayV6, h.Gateway, h.GatewayV6)...); err != nil {
					return fmt.Errorf("%s: %w", h.Name, err)
				}
				if err := l.forwarding(ctx, h.NS); err != nil {
					return fmt.Errorf("%s: %w", h.Name, err)
				}
			}
			return nil
		}},
	}
	for _, s := range steps {
		if err := step(s.name, s.f); err != nil {
			return err
		}
	}
	return nil
}

// buildSwitch creates the underlay bridges in the switch namespace and one
// veth pair per attached namespace, each created with its far end already
// inside that namespace.
//
// Equivalent to, per port:
// `ip -n SW link add PORT mtu 1500 type veth peer name eth0 mtu 1500 netns NS;
// ip -n SW link set PORT master br0 up`.
func (l *Lab) buildSwitch(ctx context.Context, routed bool) error {
	cmds := []string{
		fmt.Sprintf("link add br0 mtu %d type bridge", UnderlayMTU),
		"link set br0 up",
	}
	if routed {
		cmds = append(cmds,
			fmt.Sprintf("link add br1 mtu %d type bridge", UnderlayMTU),
			"link set br1 up")
	}
	port := func(name, bridge, peer, ns string) {
		cmds = append(cmds,
			fmt.Sprintf("link add %s mtu %d type veth peer name %s mtu %d netns %s", name, UnderlayMTU, peer, UnderlayMTU, ns),
			fmt.Sprintf("link set %s master %s up", name, bridge))
	}
	port("rt0", "br0", "eth0", l.RouterNS())
	if routed {
		port("rt1", "br1", "eth1", l.RouterNS())
	}
	port("etcd", "br0", "eth0", l.EtcdNS())
	for _, h := range l.hosts {
		bridge := "br0"
		if h.Routed {
			bridge = "br1"
		}
		port(h.Name, bridge, "eth0", h.NS)
	}
	return l.ipBatch(ctx, l.SwitchNS(), cmds...)
}

// addrCmd is the ip batch line adding p to dev.
func addrCmd(p netip.Prefix, dev string) string {
	return fmt.Sprintf("addr add %s dev %s", p, dev)
}

// underlayCmds are the ip batch lines that give dev its underlay addresses
// of the lab's families (the IPv6 one without duplicate address
// detection), bring it up and, for valid gateways, add default routes.
func (l *Lab) underlayCmds(dev string, v4, v6 netip.Prefix, gw4, gw6 netip.Addr) []string {
	var cmds []string
	if l.hasV4() {
		cmds = append(cmds, addrCmd(v4, dev))
	}
	if l.hasV6() {
		cmds = append(cmds, addrCmd(v6, dev)+" nodad")
	}
	cmds = append(cmds, "link set "+dev+" up")
	if l.hasV4() && gw4.IsValid() {
		cmds = append(cmds, "route add default via "+gw4.String())
	}
	if l.hasV6() && gw6.IsValid() {
		cmds = append(cmds, "route add ::/0 via "+gw6.String())
	}
	return cmds
}

// forwarding turns on forwarding in ns for the lab's families.
//
// Equivalent to: `ip netns exec NS sysctl -qw net.ipv4.ip_forward=1
// net.ipv6.conf.all.forwarding=1`.
func (l *Lab) forwarding(ctx context.Context, ns string) error {
	if l.hasV4() {
		if err := l.sysctl(ctx, ns, "net.ipv4.ip_forward", "1"); err != nil {
			return err
		}
	}
	if l.hasV6() {
		return l.sysctl(ctx, ns, "net.ipv6.conf.all.forwarding", "1")
	}
	return nil
}

// noDAD turns IPv6 duplicate address detection off in ns, for the
// interfaces there and those made later.
//
// Equivalent to: `ip netns exec NS sysctl -qw net.ipv6.conf.all.accept_dad=0
// net.ipv6.conf.default.accept_dad=0`.
func (l *Lab) noDAD(ctx context.Context, ns string) error {
	for _, key := range []string{"net.ipv6.conf.all.accept_dad", "net.ipv6.conf.default.accept_dad"} {
		if err := l.sysctl(ctx, ns, key, "0"); err != nil {
			return err
		}
	}
	return nil
}

// hostNamespaces returns the hosts' namespaces.
func (l *Lab) hostNamespaces() []string {
	var out []string
	for _, h := range l.hosts {
		out = append(out, h.NS)
	}
	return out
}
