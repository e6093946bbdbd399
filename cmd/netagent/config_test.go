package main

import (
	"bytes"
	"context"
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/netagent/netagent/agent"
	"github.com/netagent/netagent/backend/wireguard"
	"github.com/netagent/netagent/lease"
)

// TestValidateConfigHost: config check/set refuse what the agents refuse
// with the same words: networks in special ranges, a backend port that is
// the probe port; an overlap with this machine's subnets is a warning.
func TestValidateConfigHost(t *testing.T) {
	t.Parallel()
	env := agent.HostEnv{ProbePort: 8473, Underlay: []agent.Connected{{Iface: "eth0", Prefix: netip.MustParsePrefix("192.168.90.0/24")}}}
	for _, tc := range []struct {
		name, config string
		wantErr      error
		errText      string
		warning      string
	}{
		{"fine", `{"Network":"10.5.0.0/16"}`, nil, "", ""},
		{"loopback", `{"Network":"127.0.0.0/8"}`, lease.ErrInvalidConfig, "Network 127.0.0.0/8 overlaps 127.0.0.0/8, loopback", ""},
		{"multicast", `{"Network":"224.0.0.0/4"}`, lease.ErrInvalidConfig, "Network 224.0.0.0/4 overlaps 224.0.0.0/4, multicast", ""},
		{"probe port", `{"Network":"10.5.0.0/16","Backend":{"Type":"vxlan","Port":8473}}`, agent.ErrProbePortConflict,
			"Backend.Port 8473 is the UDP port of the probe responder (--probe-port 8473)", ""},
		{"underlay", `{"Network":"192.168.90.64/26"}`, nil, "",
			"Network 192.168.90.64/26 overlaps 192.168.90.0/24, a subnet of eth0 (the underlay): the overlay's routes would override the connected route on this machine"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, warnings, err := validateConfig(backendKinds(wireguard.Options{}), []byte(tc.config), env)
			if !errors.Is(err, tc.wantErr) || (tc.wantErr == nil) != (err == nil) || (err != nil && !strings.Contains(err.Error(), tc.errText)) {
				t.Errorf("validateConfig = %v; want %v containing %q", err, tc.wantErr, tc.errText)
			}
			if got := strings.Join(warnings, "\n"); !strings.Contains(got, tc.warning) || (tc.warning == "") != (got == "") {
				t.Errorf("warnings %q; want %q", got, tc.warning)
			}
		})
	}
}

// TestConfigCheckProbePort: `config check` refuses a backend port that is
// the default probe port, and follows --probe-port.
func TestConfigCheckProbePort(t *testing.T) {
	t.Parallel()
	file := filepath.Join(t.TempDir(), "config.json")
	if err := os.WriteFile(file, []byte(`{"Network":"10.5.0.0/16","Backend":{"Type":"vxlan","Port":8473}}`), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		args []string
		ok   bool
	}{
		{[]string{"config", "check", file}, false},
		{[]string{"config", "check", "--probe-port=9000", file}, true},
		{[]string{"config", "check", "--probe-port=0", file}, true},
	} {
		var stdout, stderr bytes.Buffer
		err := run(context.Background(), tc.args, func(string) string { return "" }, nil, &stdout, &stderr)
		if (err == nil) != tc.ok {
			t.Errorf("%v: %v (stdout %q); want ok=%v", tc.args, err, stdout.String(), tc.ok)
		}
		if err != nil && !errors.Is(err, agent.ErrProbePortConflict) {
			t.Errorf("%v: %v does not wrap ErrProbePortConflict", tc.args, err)
		}
	}
}
