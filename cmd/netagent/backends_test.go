package main

import (
	"errors"
	"testing"

	"github.com/netagent/netagent/agent"
	"github.com/netagent/netagent/backend/vxlan"
	"github.com/netagent/netagent/lease"
)

func TestBackendKinds(t *testing.T) {
	kinds := backendKinds()
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
	} {
		_, _, err := validateConfig(kinds, []byte(tc.config), agent.HostEnv{})
		if !errors.Is(err, tc.want) || (tc.want == nil) != (err == nil) {
			t.Errorf("validateConfig(%s) = %v, want %v", tc.config, err, tc.want)
		}
	}
}
