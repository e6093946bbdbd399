package iface

import (
	"net"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

func TestValidate(t *testing.T) {
	tests := []struct {
		name    string
		opts    Options
		wantErr string // "" = valid
	}{
		{"IPv4 default", Options{EnableIPv4: true}, ""},
		{"dual stack with everything", Options{
			EnableIPv4: true, EnableIPv6: true,
			Ifaces: []string{"eth0", "10.0.0.1"}, IfaceRegex: []string{`^10\.`},
			CanReach: ip("10.0.0.9"), PublicIP: ip("203.0.113.1"), PublicIPv6: ip("2001:db8::1"),
		}, ""},
		{"mapped public IPv4", Options{EnableIPv4: true, PublicIP: ip("::ffff:203.0.113.1")}, ""},
		{"no family", Options{Ifaces: []string{"eth0"}}, "neither IPv4 nor IPv6"},
		{"empty iface", Options{EnableIPv4: true, Ifaces: []string{"eth0", " "}}, "empty --iface"},
		{"bad regex", Options{EnableIPv4: true, IfaceRegex: []string{"eth[0-"}}, `--iface-regex "eth[0-"`},
		{"IPv6 as public-ip", Options{EnableIPv4: true, EnableIPv6: true, PublicIP: ip("2001:db8::1")}, "not an IPv4 address"},
		{"IPv4 as public-ipv6", Options{EnableIPv6: true, PublicIPv6: ip("203.0.113.1")}, "not an IPv6 address"},
		{"public-ip without IPv4", Options{EnableIPv6: true, PublicIP: ip("203.0.113.1")}, "IPv4 is not enabled"},
		{"public-ipv6 without IPv6", Options{EnableIPv4: true, PublicIPv6: ip("2001:db8::1")}, "IPv6 is not enabled"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.opts.Validate()
			switch {
			case tc.wantErr == "" && err != nil:
				t.Fatalf("Validate: %v", err)
			case tc.wantErr != "" && err == nil:
				t.Fatalf("Validate = nil, want an error containing %q", tc.wantErr)
			case err != nil && (!strings.Contains(err.Error(), tc.wantErr) || !strings.HasPrefix(err.Error(), "iface: ")):
				t.Fatalf("Validate = %q, want \"iface: ...%s...\"", err, tc.wantErr)
			}
		})
	}
}

func TestEligible(t *testing.T) {
	addr := func(cidr string, scope, flags int) netlink.Addr {
		p := netip.MustParsePrefix(cidr)
		ipn := &net.IPNet{IP: net.IP(p.Addr().AsSlice()), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
		return netlink.Addr{IPNet: ipn, Scope: scope, Flags: flags}
	}
	v4in16 := addr("10.0.0.7/8", unix.RT_SCOPE_UNIVERSE, 0)
	v4in16.IP = v4in16.IP.To16()
	addrs := []netlink.Addr{
		addr("fe80::1/64", unix.RT_SCOPE_LINK, 0),
		addr("127.0.0.1/8", unix.RT_SCOPE_HOST, 0),
		addr("169.254.1.1/16", unix.RT_SCOPE_LINK, 0),
		addr("192.168.1.9/24", unix.RT_SCOPE_HOST, 0), // scope host
		addr("192.168.1.2/24", unix.RT_SCOPE_UNIVERSE, unix.IFA_F_PERMANENT),
		addr("192.168.1.3/24", unix.RT_SCOPE_UNIVERSE, unix.IFA_F_PERMANENT|unix.IFA_F_SECONDARY),
		v4in16,
		addr("fd00::9/64", unix.RT_SCOPE_UNIVERSE, unix.IFA_F_TENTATIVE),
		addr("fd00::8/64", unix.RT_SCOPE_UNIVERSE, unix.IFA_F_DADFAILED),
		addr("fd00::7/64", unix.RT_SCOPE_UNIVERSE, unix.IFA_F_DEPRECATED),
		addr("fd00::2/64", unix.RT_SCOPE_UNIVERSE, 0),
		addr("ff02::1/128", unix.RT_SCOPE_UNIVERSE, 0),
		addr("2001:db8::2/64", unix.RT_SCOPE_UNIVERSE, unix.IFA_F_MANAGETEMPADDR),
	}
	tests := []struct {
		family int
		want   []netip.Addr
	}{
		{4, []netip.Addr{ip("192.168.1.2"), ip("192.168.1.3"), ip("10.0.0.7")}},
		{6, []netip.Addr{ip("fd00::2"), ip("2001:db8::2"), ip("fd00::7")}},
	}
	for _, tc := range tests {
		if got := eligible(addrs, tc.family); !slices.Equal(got, tc.want) {
			t.Errorf("eligible(IPv%d) = %v, want %v", tc.family, got, tc.want)
		}
	}
}

func TestSnapshotString(t *testing.T) {
	a := func(cidr string) netlink.Addr {
		p := netip.MustParsePrefix(cidr)
		return netlink.Addr{IPNet: &net.IPNet{IP: net.IP(p.Addr().AsSlice()), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}}
	}
	s := snapshot{
		{name: "lo", index: 1, up: true, addrs: []netlink.Addr{a("127.0.0.1/8")}},
		{name: "veth0", index: 2, up: true, addrs: []netlink.Addr{a("192.168.77.2/24"), a("fe80::1/64"), a("fd00::2/64")}},
		{name: "veth0p", index: 3, up: true},
		{name: "veth1", index: 4, addrs: []netlink.Addr{a("192.168.88.2/24")}},
	}
	want := "lo (127.0.0.1/8), veth0 (192.168.77.2/24, fd00::2/64), veth0p, veth1 (down, 192.168.88.2/24)"
	if got := s.String(); got != want {
		t.Errorf("String =\n %s\nwant\n %s", got, want)
	}
	if got := (snapshot{}).String(); got != "none" {
		t.Errorf("empty String = %q, want none", got)
	}
}
