package cniplugin

import (
	"encoding/json"
	"errors"
	"reflect"
	"testing"

	"github.com/containernetworking/cni/pkg/types"
)

// FuzzParseNetConf: parsing never panics and fails only with a CNI error; a
// config that parses builds a delegate config that is valid JSON, carries
// the network's name and version, and has the lease range untouched.
func FuzzParseNetConf(f *testing.F) {
	for _, s := range []string{
		`{"cniVersion":"1.1.0","name":"netagent","type":"netagent-cni","delegate":{"hairpinMode":true,"isDefaultGateway":true}}`,
		`{"cniVersion":"1.0.0","name":"n","type":"netagent-cni","subnetFile":"/run/flannel/subnet.env","dataDir":"/var/lib/cni/x","statusSocket":"/run/s.sock"}`,
		`{"name":"n","delegate":{"type":"ipvlan","mtu":1400,"ipMasq":true}}`,
		`{"name":"n","delegate":{"ipam":{"ranges":[[{"subnet":"1.0.0.0/8"}]]}}}`,
		`{"name":"n","ipam":{"type":"host-local","dataDir":"/d","routes":[{"dst":"192.168.0.0/16","gw":"10.0.0.1"}]}}`,
		`{"name":"n","ipam":{"ranges":[]}}`,
		`{"name":"n","prevResult":{"cniVersion":"1.0.0","ips":[{"address":"10.5.58.2/24"}]}}`,
		`{"name":"n","runtimeConfig":{"portMappings":[{"hostPort":80,"containerPort":8080}]},"cni.dev/valid-attachments":[{"containerID":"a","ifname":"eth0"}]}`,
		`{"name":"n","delegate":{"type":"../x"}}`,
		`{"name":"n","delegate":{"name":"x"}}`,
		`{"name":"n","delegate":null,"ipam":null}`,
		`{"name":""}`,
		`[]`,
		`{`,
		``,
	} {
		f.Add([]byte(s))
	}
	wantRanges := []any{[]any{map[string]any{"subnet": testInfo.Subnet.String()}}}
	f.Fuzz(func(t *testing.T, data []byte) {
		n, err := parseNetConf(data)
		if err != nil {
			var e *types.Error
			if !errors.As(err, &e) || e.Code == 0 || e.Msg == "" {
				t.Fatalf("parse error %v (%T) is not a CNI error with a code and a message", err, err)
			}
			return
		}
		conf, err := buildDelegate(n, testInfo)
		if err != nil {
			t.Fatalf("a parsed config does not build: %v", err)
		}
		var d struct {
			Name       string `json:"name"`
			CNIVersion string `json:"cniVersion"`
			Type       string `json:"type"`
			IPAM       struct {
				Type   string `json:"type"`
				Ranges any    `json:"ranges"`
			} `json:"ipam"`
		}
		if err := json.Unmarshal(conf, &d); err != nil {
			t.Fatalf("delegate config is not valid JSON: %v\n%s", err, conf)
		}
		if d.Name != n.Name || d.CNIVersion != n.CNIVersion || d.Type != n.delegateType {
			t.Fatalf("delegate name/version/type %q %q %q, want %q %q %q", d.Name, d.CNIVersion, d.Type, n.Name, n.CNIVersion, n.delegateType)
		}
		if d.IPAM.Type != ipamType || !reflect.DeepEqual(d.IPAM.Ranges, wantRanges) {
			t.Fatalf("ipam %s ranges %v, want the lease %v", d.IPAM.Type, d.IPAM.Ranges, wantRanges)
		}
		if _, err := parseDelegateHeader(conf); err != nil {
			t.Fatalf("the plugin cannot read its own delegate config back: %v", err)
		}
	})
}
