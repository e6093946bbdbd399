package cniplugin

import (
	"errors"
	"strings"
	"testing"

	"github.com/containernetworking/cni/pkg/types"
)

func TestParseNetConf(t *testing.T) {
	tests := []struct {
		name     string
		in       string
		code     uint   // 0: no error
		msg      string // part of the error message
		delegate string
		dataDir  string
	}{
		{name: "minimal", in: `{"cniVersion":"1.1.0","name":"net","type":"netagent-cni"}`, delegate: "bridge", dataDir: "/var/lib/cni/netagent-cni"},
		{name: "data dir follows the type", in: `{"cniVersion":"1.1.0","name":"net","type":"other-name"}`, delegate: "bridge", dataDir: "/var/lib/cni/other-name"},
		{name: "delegate type", in: `{"name":"net","type":"netagent-cni","delegate":{"type":"ipvlan","master":"eth0"}}`, delegate: "ipvlan", dataDir: "/var/lib/cni/netagent-cni"},
		{name: "all keys", in: `{"name":"net","type":"netagent-cni","subnetFile":"/x/subnet.env","dataDir":"/d","statusSocket":"/s.sock",
			"ipam":{"type":"host-local","dataDir":"/h","routes":[{"dst":"192.168.0.0/16"},{"dst":"fd00::/8","gw":"fd00::1"}]}}`, delegate: "bridge", dataDir: "/d"},

		{name: "not json", in: `{"name":`, code: types.ErrDecodingFailure, msg: "decoding"},
		{name: "trailing data", in: `{"name":"net"} {}`, code: types.ErrDecodingFailure, msg: "after the JSON object"},
		{name: "wrong field type", in: `{"name":"net","subnetFile":5}`, code: types.ErrDecodingFailure, msg: "subnetFile"},
		{name: "no name", in: `{"cniVersion":"1.1.0","type":"netagent-cni"}`, code: types.ErrInvalidNetworkConfig, msg: "name"},
		{name: "bad name", in: `{"name":"../x"}`, code: types.ErrInvalidNetworkConfig, msg: "name"},
		{name: "type with a path", in: `{"name":"net","type":"/opt/cni/bin/netagent-cni"}`, code: types.ErrInvalidNetworkConfig, msg: "plain file name"},
		{name: "relative subnet file", in: `{"name":"net","subnetFile":"subnet.env"}`, code: types.ErrInvalidNetworkConfig, msg: "subnetFile"},
		{name: "relative data dir", in: `{"name":"net","dataDir":"../d"}`, code: types.ErrInvalidNetworkConfig, msg: "dataDir"},
		{name: "relative socket", in: `{"name":"net","statusSocket":"x.sock"}`, code: types.ErrInvalidNetworkConfig, msg: "statusSocket"},
		{name: "delegate type with a path", in: `{"name":"net","delegate":{"type":"../../bin/sh"}}`, code: types.ErrInvalidNetworkConfig, msg: "plain file name"},
		{name: "delegate type dot dot", in: `{"name":"net","delegate":{"type":".."}}`, code: types.ErrInvalidNetworkConfig, msg: "plain file name"},
		{name: "delegate type empty", in: `{"name":"net","delegate":{"type":""}}`, code: types.ErrInvalidNetworkConfig, msg: "plain file name"},
		{name: "delegate type number", in: `{"name":"net","delegate":{"type":7}}`, code: types.ErrInvalidNetworkConfig, msg: "must be a string"},
		{name: "delegate is itself", in: `{"name":"net","type":"netagent-cni","delegate":{"type":"netagent-cni"}}`, code: types.ErrInvalidNetworkConfig, msg: "plugin itself"},
		{name: "delegate name", in: `{"name":"net","delegate":{"name":"other"}}`, code: types.ErrInvalidNetworkConfig, msg: `"name"`},
		{name: "delegate version", in: `{"name":"net","delegate":{"cniVersion":"0.1.0"}}`, code: types.ErrInvalidNetworkConfig, msg: `"cniVersion"`},
		{name: "delegate ipam", in: `{"name":"net","delegate":{"ipam":{"type":"static"}}}`, code: types.ErrInvalidNetworkConfig, msg: `"ipam"`},
		{name: "delegate not an object", in: `{"name":"net","delegate":[1]}`, code: types.ErrDecodingFailure, msg: "delegate"},
		{name: "ipam ranges", in: `{"name":"net","ipam":{"ranges":[[{"subnet":"10.0.0.0/8"}]]}}`, code: types.ErrInvalidNetworkConfig, msg: `"ranges"`},
		{name: "ipam subnet", in: `{"name":"net","ipam":{"subnet":"10.0.0.0/8"}}`, code: types.ErrInvalidNetworkConfig, msg: `"subnet"`},
		{name: "ipam other type", in: `{"name":"net","ipam":{"type":"dhcp"}}`, code: types.ErrInvalidNetworkConfig, msg: "host-local"},
		{name: "ipam bad routes", in: `{"name":"net","ipam":{"routes":[{"dst":"not-a-cidr"}]}}`, code: types.ErrInvalidNetworkConfig, msg: "routes"},
		{name: "ipam route without dst", in: `{"name":"net","ipam":{"routes":[{"gw":"10.0.0.1"}]}}`, code: types.ErrInvalidNetworkConfig, msg: "no dst"},
		{name: "ipam relative data dir", in: `{"name":"net","ipam":{"dataDir":"x"}}`, code: types.ErrInvalidNetworkConfig, msg: "ipam dataDir"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n, err := parseNetConf([]byte(tt.in))
			if tt.code == 0 {
				if err != nil {
					t.Fatalf("parseNetConf: %v", err)
				}
				if n.delegateType != tt.delegate {
					t.Errorf("delegate type %q, want %q", n.delegateType, tt.delegate)
				}
				if n.DataDir != tt.dataDir {
					t.Errorf("dataDir %q, want %q", n.DataDir, tt.dataDir)
				}
				return
			}
			var e *types.Error
			if !errors.As(err, &e) {
				t.Fatalf("error %v (%T), want a *types.Error", err, err)
			}
			if e.Code != tt.code || !strings.Contains(e.Msg, tt.msg) {
				t.Errorf("error code %d %q, want code %d containing %q", e.Code, e.Msg, tt.code, tt.msg)
			}
		})
	}
}

func TestParseNetConfDefaults(t *testing.T) {
	n, err := parseNetConf([]byte(`{"cniVersion":"1.0.0","name":"net","type":"netagent-cni"}`))
	if err != nil {
		t.Fatal(err)
	}
	if n.SubnetFile != "/run/flannel/subnet.env" || n.StatusSocket != "/run/netagent/netagent.sock" {
		t.Errorf("defaults: subnetFile %q statusSocket %q", n.SubnetFile, n.StatusSocket)
	}
}

func TestAttachments(t *testing.T) {
	n, err := parseNetConf([]byte(`{"name":"net","cni.dev/attachments":[{"containerID":"a","ifname":"eth0"}]}`))
	if err != nil {
		t.Fatal(err)
	}
	if a := n.attachments(); len(a) != 1 || a[0].ContainerID != "a" || a[0].IfName != "eth0" {
		t.Errorf("legacy key: attachments %+v", a)
	}
	n, err = parseNetConf([]byte(`{"name":"net","cni.dev/valid-attachments":[],"cni.dev/attachments":[{"containerID":"a","ifname":"eth0"}]}`))
	if err != nil {
		t.Fatal(err)
	}
	if a := n.attachments(); a == nil || len(a) != 0 {
		t.Errorf("the spec's key wins: attachments %+v", a)
	}
}
