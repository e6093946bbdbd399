package agent

import (
	"errors"
	"net/netip"
	"strings"
	"testing"

	"github.com/netagent/netagent/lease"
)

func TestCheckHost(t *testing.T) {
	t.Parallel()
	under := func(iface, p string) Connected { return Connected{Iface: iface, Prefix: netip.MustParsePrefix(p)} }
	eth0 := []Connected{under("eth0", "192.168.90.0/24"), under("eth0", "fd00:90::/64")}
	tests := []struct {
		name   string
		config string
		env    HostEnv
		want   []string // substrings, one per error, in order
		is     []error
	}{
		{"fine", `{"Network":"10.5.0.0/16"}`, HostEnv{ProbePort: 8473, Underlay: eth0}, nil, nil},
		{"vxlan Port is the probe port", `{"Network":"10.5.0.0/16","Backend":{"Type":"vxlan","Port":8473}}`, HostEnv{ProbePort: 8473},
			[]string{"Backend.Port 8473 is the UDP port of the probe responder (--probe-port 8473)"}, []error{ErrProbePortConflict}},
		{"kernel default port is the probe port", `{"Network":"10.5.0.0/16"}`, HostEnv{ProbePort: 8472},
			[]string{"Backend.Port 8472 is the UDP port of the probe responder (--probe-port 8472)"}, []error{ErrProbePortConflict}},
		{"not probing", `{"Network":"10.5.0.0/16","Backend":{"Type":"vxlan","Port":8473}}`, HostEnv{}, nil, nil},
		{"host-gw has no port", `{"Network":"10.5.0.0/16","Backend":{"Type":"host-gw"}}`, HostEnv{ProbePort: 8472}, nil, nil},
		{"wireguard ListenPort is the probe port", `{"Network":"10.5.0.0/16","Backend":{"Type":"wireguard","ListenPort":8473}}`, HostEnv{ProbePort: 8473},
			[]string{"Backend.Port 8473 is the UDP port of the probe responder"}, []error{ErrProbePortConflict}},
		{"wireguard default port", `{"Network":"10.5.0.0/16","Backend":{"Type":"wireguard"}}`, HostEnv{ProbePort: 8473}, nil, nil},
		{"network inside the underlay", `{"Network":"192.168.90.64/26"}`, HostEnv{Underlay: eth0},
			[]string{"Network 192.168.90.64/26 overlaps 192.168.90.0/24, a subnet of eth0 (the underlay): the overlay's routes would override the connected route"},
			[]error{ErrUnderlayOverlap}},
		{"network around the underlay", `{"Network":"192.168.0.0/16"}`, HostEnv{Underlay: eth0},
			[]string{"Network 192.168.0.0/16 overlaps 192.168.90.0/24, a subnet of eth0"}, []error{ErrUnderlayOverlap}},
		{"IPv6 network over the IPv6 underlay", `{"Network":"10.5.0.0/16","EnableIPv6":true,"IPv6Network":"fd00:90::/56"}`, HostEnv{Underlay: eth0},
			[]string{"IPv6Network fd00:90::/56 overlaps fd00:90::/64, a subnet of eth0"}, []error{ErrUnderlayOverlap}},
		{"disabled family not checked", `{"EnableIPv4":false,"EnableIPv6":true,"IPv6Network":"fd00:5::/48","Network":"192.168.90.0/24"}`, HostEnv{Underlay: eth0}, nil, nil},
		{"both", `{"Network":"192.168.90.0/25","Backend":{"Type":"vxlan","Port":8473}}`, HostEnv{ProbePort: 8473, Underlay: eth0},
			[]string{"Backend.Port 8473", "Network 192.168.90.0/25 overlaps 192.168.90.0/24"}, []error{ErrProbePortConflict, ErrUnderlayOverlap}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := lease.ParseConfig([]byte(tt.config))
			if err != nil {
				t.Fatal(err)
			}
			errs := CheckHost(cfg, tt.env)
			if len(errs) != len(tt.want) {
				t.Fatalf("CheckHost = %v, want %d errors %q", errs, len(tt.want), tt.want)
			}
			for i, err := range errs {
				if !strings.Contains(err.Error(), tt.want[i]) || !errors.Is(err, tt.is[i]) {
					t.Errorf("error %d = %v; want it to contain %q and wrap %v", i, err, tt.want[i], tt.is[i])
				}
			}
		})
	}
}
