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
			return nil
		}},
		{"switch", func() error { return l.buildSwitch(ctx, routed) }},
		{"router", func() error {
			cmds := []string{
				addrCmd(netip.PrefixFrom(GatewayA, UnderlayA.Bits()), "eth0"),
				"link set eth0 up",
			}
			if routed {
				cmds = append(cmds, addrCmd(netip.PrefixFrom(GatewayB, UnderlayB.Bits()), "eth1"), "link set eth1 up")
			}
			if err := l.ipBatch(ctx, rt, cmds...); err != nil {
				return err
			}
			return l.sysctl(ctx, rt, "net.ipv4.ip_forward", "1")
		}},
		{"etcd", func() error {
			return l.ipBatch(ctx, et,
				addrCmd(netip.PrefixFrom(EtcdAddr, UnderlayA.Bits()), "eth0"),
				"link set eth0 up",
				"route add default via "+GatewayA.String(),
			)
		}},
		{"hosts", func() error {
			for _, h := range l.hosts {
				if err := l.ipBatch(ctx, h.NS,
					addrCmd(h.Underlay, "eth0"),
					"link set eth0 up",
					"route add default via "+h.Gateway.String(),
				); err != nil {
					return fmt.Errorf("%s: %w", h.Name, err)
				}
				if err := l.sysctl(ctx, h.NS, "net.ipv4.ip_forward", "1"); err != nil {
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
