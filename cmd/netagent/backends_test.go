package main

import (
	"errors"
	"testing"

	"github.com/netagent/netagent/agent"
	"github.com/netagent/netagent/backend/vxlan"
	"github.com/netagent/netagent/backend/wireguard"
	"github.com/netagent/netagent/lease"
)

// testPSK is a preshared key as `wg genpsk` prints one.
const testPSK = "ZmFrZS1wc2stZm9yLXRlc3RzLW9ubHktMzItYnl0ZXM="

func TestBackendKinds(t *testing.T) {
	kinds := backendKinds(wireguard.Options{})
	seen := map[string]bool{}
	for _, k := range kinds {
		if k.Type == "" || k.New == nil || seen[k.Type] {
			t.Errorf("backend kind %q: want a unique non-empty Type and a New", k.Type)
		}
		seen[k.Type] = true
	}
	for _, tc := range []struct {
		config string
		want   error
	}{
		{`{"Network":"10.5.0.0/16"}`, nil},
		{`{"Network":"10.5.0.0/16","Backend":{"Type":"host-gw"}}`, nil},
		{`{"Network":"10.5.0.0/16","Backend":{"Type":"vxlan","VNI":"x"}}`, vxlan.ErrInvalidConfig},
		{`{"Network":"10.5.0.0/16","Backend":{"Type":"udp"}}`, lease.ErrInvalidConfig},
		{`{"Network":"10.5.0.0/16","Backend":{"Type":"wireguard","ListenPort":51830,"PSK":"` + testPSK + `"}}`, nil},
		{`{"Network":"10.5.0.0/16","Backend":{"Type":"wireguard","ListenPort":0}}`, wireguard.ErrInvalidConfig},
		{`{"Network":"10.5.0.0/16","IPv6Network":"fd00:5::/48","EnableIPv6":true,"Backend":{"Type":"wireguard","Mode":"auto"}}`, nil},
		{`{"Network":"10.5.0.0/16","Backend":{"Type":"wireguard","Mode":"both"}}`, wireguard.ErrInvalidConfig},
	} {
		_, _, err := validateConfig(kinds, []byte(tc.config), agent.HostEnv{})
		if !errors.Is(err, tc.want) || (tc.want == nil) != (err == nil) {
			t.Errorf("validateConfig(%s) = %v, want %v", tc.config, err, tc.want)
		}
	}
}
