package dataplane

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/netagent/netagent/lease"
)

// TestClaimOfForeignBackendType: an engine refuses a lease of another
// backend type as a claim that never wins, named by its key and with a
// detail naming its type; in a dual-stack network only one engine of the
// two refuses it.
func TestClaimOfForeignBackendType(t *testing.T) {
	v4 := netip.MustParsePrefix("10.5.8.0/24")
	v6 := netip.MustParsePrefix("fd00:5:8::/64")
	foreign := func(sub, sub6 netip.Prefix) *lease.Lease {
		return &lease.Lease{Subnet: sub, IPv6Subnet: sub6, CreateRevision: 1,
			Attrs: lease.LeaseAttrs{BackendType: "vxlan", PublicIP: netip.MustParseAddr("192.168.77.8")}}
	}
	tun := Tunnel(struct{ Tunnel }{}) // a non-nil Tunnel makes a tunnel engine
	for _, tc := range []struct {
		name       string
		cfg        Config
		l          *lease.Lease
		wantSubnet netip.Prefix // invalid: no claim
	}{
		{"tunnel, IPv4", Config{Type: "wireguard", Tunnel: tun, IPv4: true}, foreign(v4, netip.Prefix{}), v4},
		{"tunnel, IPv6", Config{Type: "wireguard", Tunnel: tun, Family: 6, IPv6: true}, foreign(netip.Prefix{}, v6), v6},
		{"tunnel, dual stack, IPv4 engine", Config{Type: "wireguard", Tunnel: tun, IPv4: true, IPv6: true}, foreign(v4, v6), v4},
		{"tunnel, dual stack, IPv6 engine", Config{Type: "wireguard", Tunnel: tun, Family: 6, IPv4: true, IPv6: true}, foreign(v4, v6), netip.Prefix{}},
		{"tunnel, dual stack, IPv6 engine, IPv6-only lease", Config{Type: "wireguard", Tunnel: tun, Family: 6, IPv4: true, IPv6: true}, foreign(netip.Prefix{}, v6), v6},
		{"tunnel, dual stack, IPv4 engine, IPv6-only lease", Config{Type: "wireguard", Tunnel: tun, IPv4: true, IPv6: true}, foreign(netip.Prefix{}, v6), netip.Prefix{}},
		{"host-gw", Config{Type: "host-gw", IPv4: true}, foreign(v4, netip.Prefix{}), v4},
		{"host-gw, dual stack, IPv6 engine", Config{Type: "host-gw", Family: 6, IPv4: true, IPv6: true}, foreign(v4, v6), netip.Prefix{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := &Engine{cfg: tc.cfg}
			cl := e.claimOf(tc.l)
			if !tc.wantSubnet.IsValid() {
				if cl != nil {
					t.Fatalf("claim %+v, want none", cl)
				}
				return
			}
			if cl == nil {
				t.Fatal("no claim, want a refused one")
			}
			if cl.key != tc.l.Key() || cl.subnet != tc.wantSubnet || !cl.wrongType || !strings.Contains(cl.form, `"vxlan"`) {
				t.Errorf("claim key %q subnet %s wrong type %t form %q, want %q %s, the wrong type, naming vxlan",
					cl.key, cl.subnet, cl.wrongType, cl.form, tc.l.Key(), tc.wantSubnet)
			}
		})
	}
}
