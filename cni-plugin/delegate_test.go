package cniplugin

import (
	"bytes"
	"encoding/json"
	"net/netip"
	"reflect"
	"testing"

	"github.com/netagent/netagent/subnetfile"
)

// testInfo is the lease of the example in docs/compatibility.md §4.
var testInfo = subnetfile.Info{
	Network: netip.MustParsePrefix("10.5.0.0/16"),
	Subnet:  netip.MustParsePrefix("10.5.58.0/24"),
	MTU:     1450,
	IPMasq:  true,
}

func TestBuildDelegate(t *testing.T) {
	dual := testInfo
	dual.IPv6Network = netip.MustParsePrefix("fd10::/56")
	dual.IPv6Subnet = netip.MustParsePrefix("fd10:0:0:3a::/64")
	v6only := subnetfile.Info{IPv6Network: dual.IPv6Network, IPv6Subnet: dual.IPv6Subnet, MTU: 1400}

	tests := []struct {
		name    string
		netconf string
		info    subnetfile.Info
		want    string
	}{
		{
			name:    "spec",
			netconf: `{"cniVersion":"1.0.0","name":"netagent","type":"netagent-cni"}`,
			info:    testInfo,
			want: `{"cniVersion":"1.0.0","name":"netagent","type":"bridge","isGateway":true,"isDefaultGateway":true,"hairpinMode":true,
				"ipMasq":false,"mtu":1450,"ipam":{"type":"host-local","ranges":[[{"subnet":"10.5.58.0/24"}]],"routes":[{"dst":"10.5.0.0/16"}]}}`,
		},
		{
			name:    "agent does not masquerade",
			netconf: `{"cniVersion":"0.3.1","name":"n","type":"netagent-cni"}`,
			info:    subnetfile.Info{Network: testInfo.Network, Subnet: testInfo.Subnet, MTU: 1500},
			want: `{"cniVersion":"0.3.1","name":"n","type":"bridge","isGateway":true,"isDefaultGateway":true,"hairpinMode":true,
				"ipMasq":true,"mtu":1500,"ipam":{"type":"host-local","ranges":[[{"subnet":"10.5.58.0/24"}]],"routes":[{"dst":"10.5.0.0/16"}]}}`,
		},
		{
			name:    "dual stack",
			netconf: `{"cniVersion":"1.1.0","name":"n","type":"netagent-cni"}`,
			info:    dual,
			want: `{"cniVersion":"1.1.0","name":"n","type":"bridge","isGateway":true,"isDefaultGateway":true,"hairpinMode":true,
				"ipMasq":false,"mtu":1450,"ipam":{"type":"host-local","ranges":[[{"subnet":"10.5.58.0/24"}],[{"subnet":"fd10:0:0:3a::/64"}]],
				"routes":[{"dst":"10.5.0.0/16"},{"dst":"fd10::/56"}]}}`,
		},
		{
			name:    "IPv6 only",
			netconf: `{"cniVersion":"1.1.0","name":"n","type":"netagent-cni"}`,
			info:    v6only,
			want: `{"cniVersion":"1.1.0","name":"n","type":"bridge","isGateway":true,"isDefaultGateway":true,"hairpinMode":true,
				"ipMasq":true,"mtu":1400,"ipam":{"type":"host-local","ranges":[[{"subnet":"fd10:0:0:3a::/64"}]],"routes":[{"dst":"fd10::/56"}]}}`,
		},
		{
			name: "delegate overrides, extra routes, host-local data dir, runtime config",
			netconf: `{"cniVersion":"1.0.0","name":"n","type":"netagent-cni","runtimeConfig":{"bandwidth":{"ingressRate":1}},
				"delegate":{"isDefaultGateway":false,"hairpinMode":false,"mtu":1400,"ipMasq":true,"bridge":"br9","vlan":12345678901234567},
				"ipam":{"type":"host-local","dataDir":"/tmp/hl","routes":[{"dst":"192.168.0.0/16","gw":"10.5.58.254"}]}}`,
			info: testInfo,
			want: `{"cniVersion":"1.0.0","name":"n","type":"bridge","isGateway":true,"isDefaultGateway":false,"hairpinMode":false,
				"ipMasq":true,"mtu":1400,"bridge":"br9","vlan":12345678901234567,"runtimeConfig":{"bandwidth":{"ingressRate":1}},
				"ipam":{"type":"host-local","dataDir":"/tmp/hl","ranges":[[{"subnet":"10.5.58.0/24"}]],
				"routes":[{"dst":"10.5.0.0/16"},{"dst":"192.168.0.0/16","gw":"10.5.58.254"}]}}`,
		},
		{
			name:    "another delegate gets no bridge defaults",
			netconf: `{"cniVersion":"1.0.0","name":"n","type":"netagent-cni","delegate":{"type":"ipvlan","master":"eth1"}}`,
			info:    testInfo,
			want: `{"cniVersion":"1.0.0","name":"n","type":"ipvlan","master":"eth1","ipMasq":false,"mtu":1450,
				"ipam":{"type":"host-local","ranges":[[{"subnet":"10.5.58.0/24"}]],"routes":[{"dst":"10.5.0.0/16"}]}}`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n, err := parseNetConf([]byte(tt.netconf))
			if err != nil {
				t.Fatal(err)
			}
			got, err := buildDelegate(n, tt.info)
			if err != nil {
				t.Fatal(err)
			}
			if !jsonEqual(t, got, []byte(tt.want)) {
				t.Errorf("delegate config\n got %s\nwant %s", got, tt.want)
			}
		})
	}
}

func TestWithKeys(t *testing.T) {
	got, err := withKeys([]byte(`{"name":"n","cniVersion":"0.4.0","mtu":1450}`), map[string]any{"cniVersion": "1.1.0", "prevResult": map[string]any{"ips": []any{}}})
	if err != nil {
		t.Fatal(err)
	}
	want := `{"name":"n","cniVersion":"1.1.0","mtu":1450,"prevResult":{"ips":[]}}`
	if !jsonEqual(t, got, []byte(want)) {
		t.Errorf("got %s, want %s", got, want)
	}
}

// jsonEqual compares two JSON documents by value, numbers exactly.
func jsonEqual(t *testing.T, a, b []byte) bool {
	t.Helper()
	var va, vb any
	for _, x := range []struct {
		data []byte
		v    *any
	}{{a, &va}, {b, &vb}} {
		dec := json.NewDecoder(bytes.NewReader(x.data))
		dec.UseNumber()
		if err := dec.Decode(x.v); err != nil {
			t.Fatalf("%s: %v", x.data, err)
		}
	}
	return reflect.DeepEqual(va, vb)
}
