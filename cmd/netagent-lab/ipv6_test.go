package main

import (
	"bytes"
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/netagent/netagent/internal/lab"
	"github.com/netagent/netagent/lease"
)

// TestUpIPv6Config checks, for each --ipv6 mode, the lab's families and
// underlay, and the network config written to etcd as an agent reads it.
func TestUpIPv6Config(t *testing.T) {
	tests := []struct {
		args         []string
		wantUnderlay string
		wantFams     []family
		wantJSON     string
		// Network and IPv6Network as lease.ParseConfig reads them, "" for
		// a disabled family, and the per-host IPv6 subnet length.
		wantV4, wantV6 string
		wantV6Len      int
	}{
		{
			args: nil, wantUnderlay: lab.IPv4Only, wantFams: []family{ipv4},
			wantJSON: `{"Backend":{"Type":"vxlan"},"Network":"10.5.0.0/16"}`,
			wantV4:   "10.5.0.0/16",
		},
		{
			args: []string{"--ipv6", "off"}, wantUnderlay: lab.IPv4Only, wantFams: []family{ipv4},
			wantJSON: `{"Backend":{"Type":"vxlan"},"Network":"10.5.0.0/16"}`,
			wantV4:   "10.5.0.0/16",
		},
		{
			args: []string{"--ipv6", "dual"}, wantUnderlay: lab.DualStack, wantFams: []family{ipv4, ipv6},
			wantJSON: `{"Backend":{"Type":"vxlan"},"EnableIPv6":true,"IPv6Network":"fd00:5::/48","Network":"10.5.0.0/16"}`,
			wantV4:   "10.5.0.0/16", wantV6: "fd00:5::/48", wantV6Len: 64,
		},
		{
			args: []string{"--ipv6", "only"}, wantUnderlay: lab.IPv6Only, wantFams: []family{ipv6},
			wantJSON: `{"Backend":{"Type":"vxlan"},"EnableIPv4":false,"EnableIPv6":true,"IPv6Network":"fd00:5::/48"}`,
			wantV6:   "fd00:5::/48", wantV6Len: 64,
		},
		{
			args:         []string{"--ipv6", "dual", "--backend", "host-gw", "--network", "10.9.0.0/16", "--ipv6-network", "fd00:9:1::/56"},
			wantUnderlay: lab.DualStack, wantFams: []family{ipv4, ipv6},
			wantJSON: `{"Backend":{"Type":"host-gw"},"EnableIPv6":true,"IPv6Network":"fd00:9:1::/56","Network":"10.9.0.0/16"}`,
			wantV4:   "10.9.0.0/16", wantV6: "fd00:9:1::/56", wantV6Len: 64,
		},
		{
			// Routed hosts: the router forwards IPv6 between fd77::/64 and
			// fd88::/64. 7 subnets of /64 in a /61 for 5 hosts.
			args:         []string{"--ipv6", "only", "--routed-hosts", "2", "--ipv6-network", "fd00:7::/61"},
			wantUnderlay: lab.IPv6Only, wantFams: []family{ipv6},
			wantJSON: `{"Backend":{"Type":"vxlan"},"EnableIPv4":false,"EnableIPv6":true,"IPv6Network":"fd00:7::/61"}`,
			wantV6:   "fd00:7::/61", wantV6Len: 64,
		},
		{
			// Longer than /62: subnets of the network's length plus 2.
			args:         []string{"--ipv6", "only", "--hosts", "2", "--ipv6-network", "fd00:7::/112"},
			wantUnderlay: lab.IPv6Only, wantFams: []family{ipv6},
			wantJSON: `{"Backend":{"Type":"vxlan"},"EnableIPv4":false,"EnableIPv6":true,"IPv6Network":"fd00:7::/112"}`,
			wantV6:   "fd00:7::/112", wantV6Len: 114,
		},
	}
	for _, tt := range tests {
		t.Run(strings.Join(append([]string{"up"}, tt.args...), " "), func(t *testing.T) {
			var stderr bytes.Buffer
			o, err := parseUp(tt.args, &stderr)
			if err != nil {
				t.Fatalf("parseUp: %v\n%s", err, stderr.String())
			}
			if got := labIPv6(o.ipv6); got != tt.wantUnderlay {
				t.Errorf("lab.Options.IPv6 %q, want %q", got, tt.wantUnderlay)
			}
			if got := familiesOf(o.ipv6); !slices.Equal(got, tt.wantFams) {
				t.Errorf("families %v, want %v", got, tt.wantFams)
			}
			b, parsed, err := o.config()
			if err != nil {
				t.Fatalf("config: %v", err)
			}
			if string(b) != tt.wantJSON {
				t.Errorf("config\n%s\nwant\n%s", b, tt.wantJSON)
			}
			// What the agents read: parse the bytes written to etcd.
			c, err := lease.ParseConfig(b)
			if err != nil {
				t.Fatalf("lease.ParseConfig(%s): %v", b, err)
			}
			if c.EnableIPv4 != (tt.wantV4 != "") || c.EnableIPv6 != (tt.wantV6 != "") {
				t.Errorf("EnableIPv4 %v, EnableIPv6 %v; want IPv4 network %q, IPv6 network %q", c.EnableIPv4, c.EnableIPv6, tt.wantV4, tt.wantV6)
			}
			if got := prefixString(c.Network); got != tt.wantV4 {
				t.Errorf("Network %q, want %q", got, tt.wantV4)
			}
			if got := prefixString(c.IPv6Network); got != tt.wantV6 || c.IPv6SubnetLen != tt.wantV6Len {
				t.Errorf("IPv6Network %q subnets /%d, want %q /%d", got, c.IPv6SubnetLen, tt.wantV6, tt.wantV6Len)
			}
			if c.BackendType != o.backend || parsed.BackendType != o.backend {
				t.Errorf("backend %q (config() says %q), want %q", c.BackendType, parsed.BackendType, o.backend)
			}
			if c.EnableIPv6 && c.IPv6PoolSize() < uint64(o.hosts+o.routedHosts) {
				t.Errorf("%d IPv6 subnets for %d hosts", c.IPv6PoolSize(), o.hosts+o.routedHosts)
			}
		})
	}
}

// TestUpOnceIPv6 brings a dual-stack and an IPv6-only lab up and down,
// with a host behind the router: every container gets an address of each
// family of the lab and reaches every other over each, and nothing is
// left.
func TestUpOnceIPv6(t *testing.T) {
	requireRoot(t)
	labBinary(t)
	tests := []struct {
		mode string
		fams []family
		// device is the agent's VXLAN device of each family.
		devices []string
	}{
		{ipv6Dual, []family{ipv4, ipv6}, []string{"flannel.1", "flannel-v6.1"}},
		{ipv6Only, []family{ipv6}, []string{"flannel-v6.1"}},
	}
	for _, tt := range tests {
		t.Run(tt.mode, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "lab")
			before := rootLinks(t)
			start := time.Now()
			out, err := runLab(t, 90*time.Second, "up", "--once", "--ipv6", tt.mode,
				"--hosts", "2", "--routed-hosts", "1", "--containers-per-host", "2", "--dir", dir)
			t.Logf("up --once --ipv6 %s took %v", tt.mode, time.Since(start).Round(time.Millisecond))
			if err != nil {
				t.Fatalf("up --once --ipv6 %s: %v\n%s", tt.mode, err, out)
			}
			m := prefixRE.FindStringSubmatch(out)
			if m == nil {
				t.Fatalf("no namespace prefix in the output:\n%s", out)
			}
			for _, f := range tt.fams {
				assertFullMatrix(t, out, f, 6)
			}
			if has := strings.Contains(out, "IPv4 ping matrix"); has != slices.Contains(tt.fams, ipv4) {
				t.Errorf("IPv4 ping matrix printed: %v, want %v", has, !has)
			}
			// Every container line lists one address of each family, in
			// the overlay of that family.
			overlay := map[family]netip.Prefix{ipv4: netip.MustParsePrefix("10.5.0.0/16"), ipv6: netip.MustParsePrefix("fd00:5::/48")}
			ctnLine := regexp.MustCompile(`(?m)^(h[0-9]-c[0-9]): (.*) on (h[0-9])$`)
			lines := ctnLine.FindAllStringSubmatch(out, -1)
			if len(lines) != 6 {
				t.Fatalf("%d container lines, want 6:\n%s", len(lines), out)
			}
			for _, l := range lines {
				addrs := strings.Fields(l[2])
				if len(addrs) != len(tt.fams) {
					t.Errorf("%s: addresses %q, want one of each of %v", l[1], addrs, tt.fams)
					continue
				}
				for i, f := range tt.fams {
					a, err := netip.ParseAddr(addrs[i])
					if err != nil || !overlay[f].Contains(a) {
						t.Errorf("%s: %s address %q not in %s (%v)", l[1], f, addrs[i], overlay[f], err)
					}
				}
			}
			// h3 is behind the router, on the IPv6 underlay fd88::/64.
			if !strings.Contains(out, "=== h3 (namespace "+m[1]+"-h3, underlay ") || !strings.Contains(out, "fd88::13/64) ===") {
				t.Errorf("no status of the routed host h3 with its IPv6 underlay:\n%s", out)
			}
			if n := strings.Count(out, "\nlease: "); n != 3 {
				t.Errorf("%d statuses with a lease, want 3", n)
			}
			// Each host programs each other host once per family.
			if n, want := strings.Count(out, "  vxlan  ok\n"), 3*2*len(tt.fams); n != want {
				t.Errorf("%d programmed vxlan peers in the statuses, want %d", n, want)
			}
			for _, dev := range tt.devices {
				if n := strings.Count(out, "device "+dev+" "); n != 3 {
					t.Errorf("%d statuses with device %s, want 3", n, dev)
				}
			}
			if tt.mode == ipv6Only && strings.Contains(out, "flannel.1") {
				t.Error("an IPv6-only lab has flannel.1")
			}
			assertGone(t, m[1], dir, before)
			if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("lab directory %s left behind: %v", dir, err)
			}
		})
	}
}

// TestUpIPv6OnlyStatus runs an IPv6-only lab in the background: status,
// exec and down find its family in the state file.
func TestUpIPv6OnlyStatus(t *testing.T) {
	requireRoot(t)
	dir := filepath.Join(t.TempDir(), "lab")
	before := rootLinks(t)
	out, err := runLab(t, 90*time.Second, "up", "--detach", "--ipv6", "only", "--hosts", "2", "--dir", dir)
	if err != nil {
		t.Fatalf("up --detach --ipv6 only: %v\n%s", err, out)
	}
	s, err := readState(dir)
	if err != nil || !s.Ready {
		t.Fatalf("state after up --detach: %+v, %v", s, err)
	}
	t.Cleanup(func() { // if the test fails before down
		if upAlive(s.PID) {
			runLab(t, 60*time.Second, "down", "--dir", dir)
		}
	})
	if s.IPv6 != ipv6Only || s.IPv6Network != "fd00:5::/48" || s.Network != "" || len(s.Containers) != 4 {
		t.Fatalf("state: ipv6 %q, networks %q %q, %d containers", s.IPv6, s.Network, s.IPv6Network, len(s.Containers))
	}
	for _, c := range s.Containers {
		if c.IP != "" || c.IPv6 == "" {
			t.Errorf("%s: addresses %q %q, want IPv6 only", c.Name, c.IP, c.IPv6)
		}
	}
	for _, h := range s.Hosts {
		if h.Underlay != "" || h.Subnet != "" || h.UnderlayV6 == "" || h.IPv6Subnet == "" {
			t.Errorf("%s: underlay %q %q, lease %q %q, want IPv6 only", h.Name, h.Underlay, h.UnderlayV6, h.Subnet, h.IPv6Subnet)
		}
	}
	if !strings.Contains(out, "-- ping -c 3 "+s.Containers[3].IPv6+" ") {
		t.Errorf("the how-to lacks a ping to %s:\n%s", s.Containers[3].IPv6, out)
	}

	out, err = runLab(t, 60*time.Second, "status", "--dir", dir)
	if err != nil {
		t.Errorf("status: %v\n%s", err, out)
	}
	assertFullMatrix(t, out, ipv6, 4)
	if strings.Contains(out, "IPv4 ping matrix") || !strings.Contains(out, "network fd00:5::/48\n") {
		t.Errorf("status of an IPv6-only lab:\n%s", out)
	}
	out, err = runLab(t, 20*time.Second, "exec", "--dir", dir, "h1-c1", "--", "ping", "-6", "-c", "1", "-W", "2", s.Containers[3].IPv6)
	if err != nil {
		t.Errorf("exec h1-c1 -- ping -6 %s: %v\n%s", s.Containers[3].IPv6, err, out)
	}
	out, err = runLab(t, 60*time.Second, "down", "--dir", dir)
	if err != nil {
		t.Fatalf("down: %v\n%s", err, out)
	}
	assertGone(t, s.Prefix, dir, before)
}
