package iface

import (
	"errors"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"
)

// twoLinks sets up the usual stand-in underlay: veth0 192.168.77.2/24 and
// veth1 192.168.88.2/24 with MTU 1400, both up, no routes but the
// connected ones.
func twoLinks(t *testing.T, h *netlink.Handle) {
	addVeth(t, h, "veth0", 0, true, "192.168.77.2/24")
	addVeth(t, h, "veth1", 1400, true, "192.168.88.2/24")
}

func TestSelect(t *testing.T) {
	v4 := func(o Options) Options { o.EnableIPv4 = true; return o }
	tests := []struct {
		name  string
		setup func(t *testing.T, h *netlink.Handle)
		opts  Options
		// On success:
		want External // Index and MTU are checked against the kernel
		// On failure:
		errIs       []error
		errContains []string
	}{
		{
			name: "default route interface",
			setup: func(t *testing.T, h *netlink.Handle) {
				twoLinks(t, h)
				addRoute(t, h, "0.0.0.0/0", "192.168.88.1", "veth1", 0, "")
			},
			opts: v4(Options{}),
			want: External{Name: "veth1", Addr: ip("192.168.88.2"), PublicIP: ip("192.168.88.2")},
		},
		{
			name: "lowest metric of two default routes",
			setup: func(t *testing.T, h *netlink.Handle) {
				twoLinks(t, h)
				addRoute(t, h, "0.0.0.0/0", "192.168.77.1", "veth0", 200, "")
				addRoute(t, h, "0.0.0.0/0", "192.168.88.1", "veth1", 100, "")
			},
			opts: v4(Options{}),
			want: External{Name: "veth1", Addr: ip("192.168.88.2"), PublicIP: ip("192.168.88.2")},
		},
		{
			name: "lowest metric of two default routes, other order",
			setup: func(t *testing.T, h *netlink.Handle) {
				twoLinks(t, h)
				addRoute(t, h, "0.0.0.0/0", "192.168.88.1", "veth1", 300, "")
				addRoute(t, h, "0.0.0.0/0", "192.168.77.1", "veth0", 50, "")
			},
			opts: v4(Options{}),
			want: External{Name: "veth0", Addr: ip("192.168.77.2"), PublicIP: ip("192.168.77.2")},
		},
		{
			name: "iface by name beats the default route",
			setup: func(t *testing.T, h *netlink.Handle) {
				twoLinks(t, h)
				addRoute(t, h, "0.0.0.0/0", "192.168.88.1", "veth1", 0, "")
			},
			opts: v4(Options{Ifaces: []string{"veth0"}}),
			want: External{Name: "veth0", Addr: ip("192.168.77.2"), PublicIP: ip("192.168.77.2")},
		},
		{
			name: "iface by its second address",
			setup: func(t *testing.T, h *netlink.Handle) {
				addVeth(t, h, "veth0", 0, true, "192.168.77.2/24", "192.168.77.3/24")
			},
			opts: v4(Options{Ifaces: []string{"192.168.77.3"}}),
			want: External{Name: "veth0", Addr: ip("192.168.77.3"), PublicIP: ip("192.168.77.3")},
		},
		{
			name:  "several ifaces, the first does not exist",
			setup: twoLinks,
			opts:  v4(Options{Ifaces: []string{"eth9", "10.9.9.9", "veth1", "veth0"}}),
			want:  External{Name: "veth1", Addr: ip("192.168.88.2"), PublicIP: ip("192.168.88.2")},
		},
		{
			name: "iface-regex against an address, not the first of the interface",
			setup: func(t *testing.T, h *netlink.Handle) {
				addVeth(t, h, "veth0", 0, true, "192.168.77.2/24")
				addVeth(t, h, "veth1", 0, true, "192.168.99.2/24", "192.168.88.2/24")
			},
			opts: v4(Options{IfaceRegex: []string{`^192\.168\.88\.`}}),
			want: External{Name: "veth1", Addr: ip("192.168.88.2"), PublicIP: ip("192.168.88.2")},
		},
		{
			name:  "iface-regex against a name",
			setup: twoLinks,
			opts:  v4(Options{IfaceRegex: []string{"^nomatch$", "^ve.*1$"}}),
			want:  External{Name: "veth1", Addr: ip("192.168.88.2"), PublicIP: ip("192.168.88.2")},
		},
		{
			name: "iface-regex: addresses are matched before names",
			setup: func(t *testing.T, h *netlink.Handle) {
				addVeth(t, h, "veth0", 0, true, "192.168.77.2/24")
				addVeth(t, h, "veth1", 0, true, "10.1.1.1/24")
			},
			// "1" is in veth1's name but first in veth0's address.
			opts: v4(Options{IfaceRegex: []string{"^1"}}),
			want: External{Name: "veth0", Addr: ip("192.168.77.2"), PublicIP: ip("192.168.77.2")},
		},
		{
			name: "iface-can-reach takes the more specific route and its source",
			setup: func(t *testing.T, h *netlink.Handle) {
				addVeth(t, h, "veth0", 0, true, "192.168.77.2/24")
				addVeth(t, h, "veth1", 1400, true, "192.168.88.2/24", "192.168.88.3/24")
				addRoute(t, h, "0.0.0.0/0", "192.168.77.1", "veth0", 0, "")
				addRoute(t, h, "10.0.0.0/8", "192.168.77.1", "veth0", 0, "")
				addRoute(t, h, "10.1.0.0/16", "192.168.88.1", "veth1", 0, "192.168.88.3")
			},
			opts: v4(Options{CanReach: ip("10.1.2.3")}),
			want: External{Name: "veth1", Addr: ip("192.168.88.3"), PublicIP: ip("192.168.88.3")},
		},
		{
			name: "public-ip override",
			setup: func(t *testing.T, h *netlink.Handle) {
				twoLinks(t, h)
				addRoute(t, h, "0.0.0.0/0", "192.168.88.1", "veth1", 0, "")
			},
			opts: v4(Options{PublicIP: ip("203.0.113.5")}),
			want: External{Name: "veth1", Addr: ip("192.168.88.2"), PublicIP: ip("203.0.113.5")},
		},
		{
			name: "IPv6 only: global address, link-local default gateway",
			setup: func(t *testing.T, h *netlink.Handle) {
				addVeth(t, h, "veth0", 0, true, "192.168.77.2/24")
				addVeth(t, h, "veth1", 0, true, "fe80::2/64", "fd00:88::2/64")
				addRoute(t, h, "0.0.0.0/0", "192.168.77.1", "veth0", 0, "")
				addRoute(t, h, "::/0", "fe80::1", "veth1", 0, "")
			},
			opts: Options{EnableIPv6: true},
			want: External{Name: "veth1", AddrV6: ip("fd00:88::2"), PublicIPv6: ip("fd00:88::2")},
		},
		{
			name: "IPv6 only: a link-local address is not enough",
			setup: func(t *testing.T, h *netlink.Handle) {
				addVeth(t, h, "veth0", 0, true, "192.168.77.2/24", "fe80::2/64")
				addRoute(t, h, "::/0", "fe80::1", "veth0", 0, "")
			},
			opts:        Options{EnableIPv6: true},
			errIs:       []error{ErrNoInterface},
			errContains: []string{"veth0 has no global IPv6 address", "IPv6 default route"},
		},
		{
			name: "dual stack fills both families",
			setup: func(t *testing.T, h *netlink.Handle) {
				addVeth(t, h, "veth0", 0, true, "192.168.77.2/24", "fd00:77::2/64")
				addVeth(t, h, "veth1", 0, true, "192.168.88.2/24", "fd00:88::2/64")
				addRoute(t, h, "0.0.0.0/0", "192.168.77.1", "veth0", 0, "")
				addRoute(t, h, "::/0", "fd00:88::1", "veth1", 0, "")
			},
			opts: Options{EnableIPv4: true, EnableIPv6: true, PublicIPv6: ip("2001:db8::5")},
			want: External{Name: "veth0", Addr: ip("192.168.77.2"), PublicIP: ip("192.168.77.2"),
				AddrV6: ip("fd00:77::2"), PublicIPv6: ip("2001:db8::5")},
		},
		{
			name: "dual stack by IPv6 address takes the interface's IPv4 address",
			setup: func(t *testing.T, h *netlink.Handle) {
				addVeth(t, h, "veth0", 0, true, "192.168.77.2/24", "fd00:77::2/64", "fd00:77::3/64")
			},
			opts: Options{EnableIPv4: true, EnableIPv6: true, Ifaces: []string{"fd00:77::3"}},
			want: External{Name: "veth0", Addr: ip("192.168.77.2"), PublicIP: ip("192.168.77.2"),
				AddrV6: ip("fd00:77::3"), PublicIPv6: ip("fd00:77::3")},
		},
		{
			name: "dual stack needs an IPv6 address",
			setup: func(t *testing.T, h *netlink.Handle) {
				twoLinks(t, h)
				addRoute(t, h, "0.0.0.0/0", "192.168.77.1", "veth0", 0, "")
			},
			opts:        Options{EnableIPv4: true, EnableIPv6: true},
			errIs:       []error{ErrNoInterface},
			errContains: []string{"veth0 has no global IPv6 address"},
		},
		{
			name:        "nothing matches",
			setup:       twoLinks,
			opts:        v4(Options{Ifaces: []string{"eth9"}, IfaceRegex: []string{"^wlan"}}),
			errIs:       []error{ErrNoInterface},
			errContains: []string{"--iface=eth9", "eth9: no such interface", "lo (127.0.0.1/8", "veth0 (192.168.77.2/24)", "veth1 (192.168.88.2/24)", "veth0p"},
		},
		{
			name: "interface down is skipped and reported",
			setup: func(t *testing.T, h *netlink.Handle) {
				addVeth(t, h, "veth2", 0, false, "192.168.99.2/24")
			},
			opts:        v4(Options{Ifaces: []string{"veth2"}}),
			errIs:       []error{ErrNoInterface, ErrInterfaceDown},
			errContains: []string{"veth2 is down", "veth2 (down, 192.168.99.2/24)"},
		},
		{
			name: "interface down falls through to the next candidate",
			setup: func(t *testing.T, h *netlink.Handle) {
				twoLinks(t, h)
				addVeth(t, h, "veth2", 0, false, "192.168.99.2/24")
			},
			opts: v4(Options{Ifaces: []string{"veth2", "veth1"}}),
			want: External{Name: "veth1", Addr: ip("192.168.88.2"), PublicIP: ip("192.168.88.2")},
		},
		{
			name:        "no default route",
			setup:       twoLinks,
			opts:        v4(Options{}),
			errIs:       []error{ErrNoInterface, ErrNoDefaultRoute},
			errContains: []string{"no IPv4 default route", "--iface", "veth0 (192.168.77.2/24)"},
		},
		{
			name: "iface-can-reach without a route",
			setup: func(t *testing.T, h *netlink.Handle) {
				twoLinks(t, h)
			},
			opts:        v4(Options{CanReach: ip("10.1.2.3")}),
			errIs:       []error{ErrNoInterface},
			errContains: []string{"--iface-can-reach=10.1.2.3", "no route to 10.1.2.3"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			h := newNS(t)
			tc.setup(t, h)
			got, err := Select(h, tc.opts)
			if tc.errIs != nil {
				if err == nil {
					t.Fatalf("Select = %+v, want an error", got)
				}
				t.Logf("error: %v", err)
				for _, target := range tc.errIs {
					if !errors.Is(err, target) {
						t.Errorf("error %q is not %v", err, target)
					}
				}
				for _, s := range tc.errContains {
					if !strings.Contains(err.Error(), s) {
						t.Errorf("error %q does not contain %q", err, s)
					}
				}
				for _, other := range []error{ErrInterfaceDown, ErrNoDefaultRoute} {
					if !slices.Contains(tc.errIs, other) && errors.Is(err, other) {
						t.Errorf("error %q is also %v", err, other)
					}
				}
				return
			}
			if err != nil {
				t.Fatalf("Select: %v", err)
			}
			l, err := h.LinkByName(tc.want.Name)
			if err != nil {
				t.Fatalf("want link %s: %v", tc.want.Name, err)
			}
			tc.want.Index, tc.want.MTU = l.Attrs().Index, l.Attrs().MTU
			if got != tc.want {
				t.Errorf("Select =\n %+v\nwant\n %+v", got, tc.want)
			}
		})
	}
}

func TestSelectInvalidOptions(t *testing.T) {
	h := newNS(t)
	_, err := Select(h, Options{EnableIPv4: true, IfaceRegex: []string{"("}})
	if err == nil || errors.Is(err, ErrNoInterface) {
		t.Fatalf("Select with a bad regex = %v, want an option error", err)
	}
}

func ip(s string) netip.Addr { return netip.MustParseAddr(s) }
