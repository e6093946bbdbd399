package cniplugin

import (
	"errors"
	"net"
	"net/netip"
	"strings"
	"testing"

	"github.com/containernetworking/cni/pkg/types"
	types100 "github.com/containernetworking/cni/pkg/types/100"
)

func TestCheckLease(t *testing.T) {
	ipc := func(cidr string, iface *int) *types100.IPConfig {
		ip, n, err := net.ParseCIDR(cidr)
		if err != nil {
			t.Fatal(err)
		}
		n.IP = ip
		return &types100.IPConfig{Address: *n, Interface: iface}
	}
	ifaces := []*types100.Interface{{Name: "cni0"}, {Name: "veth1"}, {Name: "eth0", Sandbox: "/run/netns/c"}, {Name: "net1", Sandbox: "/run/netns/c"}}
	dual := testInfo
	dual.IPv6Subnet = netip.MustParsePrefix("fd10:0:0:3a::/64")

	tests := []struct {
		name string
		ips  []*types100.IPConfig
		msg  string // "" when the check passes
	}{
		{"inside", []*types100.IPConfig{ipc("10.5.58.2/24", types100.Int(2))}, ""},
		{"no interface index", []*types100.IPConfig{ipc("10.5.58.3/24", nil)}, ""},
		{"dual stack", []*types100.IPConfig{ipc("10.5.58.2/24", types100.Int(2)), ipc("fd10::3a:0:0:0:5/64", types100.Int(2))}, ""},
		{"another interface is not checked", []*types100.IPConfig{ipc("192.168.1.2/24", types100.Int(3)), ipc("10.5.58.2/24", types100.Int(2))}, ""},
		{"host side is not checked", []*types100.IPConfig{ipc("10.5.58.1/24", types100.Int(0))}, ""},
		{"lease changed", []*types100.IPConfig{ipc("10.5.60.2/24", types100.Int(2))}, "outside this host's current lease 10.5.58.0/24"},
		{"other family gone", []*types100.IPConfig{ipc("fd10::3a:0:0:0:5/64", types100.Int(2))}, "no IPv6 lease"},
		{"bad index", []*types100.IPConfig{ipc("10.5.58.2/24", types100.Int(9))}, "interface 9"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			info := dual
			if tt.name == "other family gone" {
				info = testInfo
			}
			err := checkLease(&types100.Result{Interfaces: ifaces, IPs: tt.ips}, info, "eth0")
			if tt.msg == "" {
				if err != nil {
					t.Fatalf("checkLease: %v", err)
				}
				return
			}
			var e *types.Error
			if !errors.As(err, &e) || !strings.Contains(e.Msg, tt.msg) {
				t.Fatalf("checkLease: %v, want an error containing %q", err, tt.msg)
			}
		})
	}
}

func TestMergeResult(t *testing.T) {
	prevJSON := `{"cniVersion":"1.0.0","interfaces":[{"name":"eth0","sandbox":"/x"}],
		"ips":[{"address":"192.168.1.2/24","interface":0}],"routes":[{"dst":"0.0.0.0/0"}],"dns":{"nameservers":["1.1.1.1"]}}`
	curJSON := `{"cniVersion":"1.0.0","interfaces":[{"name":"cni0"},{"name":"net1","sandbox":"/x"}],
		"ips":[{"address":"10.5.58.2/24","interface":1,"gateway":"10.5.58.1"}],"routes":[{"dst":"10.5.0.0/16"}],"dns":{"nameservers":["9.9.9.9"]}}`
	prev, err := types100.NewResult([]byte(prevJSON))
	if err != nil {
		t.Fatal(err)
	}
	cur, err := types100.NewResult([]byte(curJSON))
	if err != nil {
		t.Fatal(err)
	}
	m := mergeResult(prev.(*types100.Result), cur.(*types100.Result))
	if len(m.Interfaces) != 3 || m.Interfaces[2].Name != "net1" {
		t.Fatalf("interfaces %v", m.Interfaces)
	}
	if len(m.IPs) != 2 || *m.IPs[0].Interface != 0 || *m.IPs[1].Interface != 2 || m.IPs[1].Address.String() != "10.5.58.2/24" {
		t.Fatalf("ips %v", m.IPs)
	}
	if len(m.Routes) != 2 || m.DNS.Nameservers[0] != "1.1.1.1" {
		t.Fatalf("routes %v dns %v", m.Routes, m.DNS)
	}
	// The inputs are not modified.
	if *cur.(*types100.Result).IPs[0].Interface != 1 {
		t.Error("mergeResult changed its input")
	}
}
