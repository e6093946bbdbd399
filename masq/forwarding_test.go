package masq

import (
	"os"
	"strings"
	"testing"
)

func readSysctl(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

func TestEnableForwarding(t *testing.T) {
	requireRoot(t)
	// Read (never write) the root namespace's values to check they stay.
	root4, root6 := readSysctl(t, sysctlIPv4Forward), readSysctl(t, sysctlIPv6Forward)

	tests := []struct {
		name         string
		v4, v6       bool
		want4, want6 string
	}{
		{"none", false, false, "0", "0"},
		{"ipv4", true, false, "1", "0"},
		{"ipv6", false, true, "0", "1"},
		{"both", true, true, "1", "1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n := newNS(t)
			var got4, got6 string
			n.do(t, func() error {
				if err := EnableForwarding(tt.v4, tt.v6); err != nil {
					return err
				}
				// Twice: a sysctl already at 1 is fine.
				if err := EnableForwarding(tt.v4, tt.v6); err != nil {
					return err
				}
				got4, got6 = readSysctl(t, sysctlIPv4Forward), readSysctl(t, sysctlIPv6Forward)
				return nil
			})
			if got4 != tt.want4 || got6 != tt.want6 {
				t.Errorf("in the namespace: ip_forward=%s ipv6 forwarding=%s, want %s %s", got4, got6, tt.want4, tt.want6)
			}
			if g4, g6 := readSysctl(t, sysctlIPv4Forward), readSysctl(t, sysctlIPv6Forward); g4 != root4 || g6 != root6 {
				t.Errorf("root namespace changed: ip_forward %s→%s, ipv6 forwarding %s→%s", root4, g4, root6, g6)
			}
		})
	}
}
