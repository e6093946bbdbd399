package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/netagent/netagent/agent"
)

// TestParseRunKube: kube mode's command lines as flanneld's, from flags,
// NETAGENT_* and FLANNELD_* variables, with the node name from NODE_NAME.
func TestParseRunKube(t *testing.T) {
	runParseCases(t, []parseCase{
		{
			name: "flanneld's DaemonSet command line",
			args: []string{"--ip-masq", "--kube-subnet-mgr"},
			env:  map[string]string{"NODE_NAME": "node-1"},
			check: func(t *testing.T, o *optsView) {
				o.eq(t, "kube", o.Kube, agent.KubeOptions{Enabled: true, NodeName: "node-1",
					AnnotationPrefix: "flannel.alpha.coreos.com", NetConfigPath: "/etc/kube-flannel/net-conf.json",
					SetNodeNetworkUnavailable: true})
				o.eq(t, "masq", o.IPMasq, true)
				// flannel's default prefix: the default instance's names.
				o.eq(t, "status socket", o.StatusSocket, agent.DefaultStatusSocket)
				o.eq(t, "instance", o.InstanceKey(), agent.DefaultEtcdPrefix)
			},
		},
		{
			name: "every kube flag",
			args: []string{"--kube-subnet-mgr", "--kube-api-url", "https://10.0.0.1:6443", "--kubeconfig-file", "/etc/kc",
				"--kube-annotation-prefix", "example.com/net", "--net-config-path", "/etc/nc.json", "--node-name", "n2",
				"--set-node-network-unavailable=false"},
			env: map[string]string{"NODE_NAME": "ignored"},
			check: func(t *testing.T, o *optsView) {
				o.eq(t, "kube", o.Kube, agent.KubeOptions{Enabled: true, APIURL: "https://10.0.0.1:6443", Kubeconfig: "/etc/kc",
					NodeName: "n2", AnnotationPrefix: "example.com/net", NetConfigPath: "/etc/nc.json"})
				o.eq(t, "instance", o.InstanceKey(), "kube:example.com/net")
				o.eq(t, "status socket", o.StatusSocket, agent.StatusSocketFor("kube:example.com/net"))
				o.eq(t, "probe port", o.ProbePort, agent.ProbePortFor("kube:example.com/net"))
			},
		},
		{
			name: "FLANNELD_* variables",
			env: map[string]string{"FLANNELD_KUBE_SUBNET_MGR": "true", "FLANNELD_KUBE_ANNOTATION_PREFIX": "example.org",
				"FLANNELD_NET_CONFIG_PATH": "/n.json", "NODE_NAME": "n3", "FLANNELD_SET_NODE_NETWORK_UNAVAILABLE": "false"},
			check: func(t *testing.T, o *optsView) {
				o.eq(t, "kube", o.Kube, agent.KubeOptions{Enabled: true, NodeName: "n3",
					AnnotationPrefix: "example.org", NetConfigPath: "/n.json"})
			},
		},
		{
			name: "NETAGENT_* variables",
			env:  map[string]string{"NETAGENT_KUBE_SUBNET_MGR": "1", "NETAGENT_NODE_NAME": "n4", "NODE_NAME": "ignored"},
			check: func(t *testing.T, o *optsView) {
				o.eq(t, "node", o.Kube.NodeName, "n4")
				o.eq(t, "enabled", o.Kube.Enabled, true)
			},
		},
		{
			name: "etcd mode ignores NODE_NAME",
			env:  map[string]string{"NODE_NAME": "n5"},
			check: func(t *testing.T, o *optsView) {
				o.eq(t, "kube", o.Kube.Enabled, false)
				o.eq(t, "instance", o.InstanceKey(), agent.DefaultEtcdPrefix)
			},
		},
	})
}

// TestParseRunKubeRefused: bad combinations are refused at start with a
// usage error naming the flag.
func TestParseRunKubeRefused(t *testing.T) {
	tests := []struct {
		name string
		args []string
		env  map[string]string
		want []string
	}{
		{"no node name", []string{"--kube-subnet-mgr"}, nil, []string{"--node-name", "NODE_NAME"}},
		{"not a node name", []string{"--kube-subnet-mgr", "--node-name", "Node_1"}, nil, []string{"--node-name", `"Node_1"`}},
		{"etcd endpoints in kube mode", []string{"--kube-subnet-mgr", "--etcd-endpoints", "http://10.0.0.1:2379"},
			map[string]string{"NODE_NAME": "n"}, []string{"--etcd-endpoints is not used in kube mode"}},
		{"etcd prefix from the environment in kube mode", []string{"--kube-subnet-mgr"},
			map[string]string{"NODE_NAME": "n", "FLANNELD_ETCD_PREFIX": "/x/network"}, []string{"--etcd-prefix is not used in kube mode"}},
		{"lease TTL in kube mode", []string{"--kube-subnet-mgr", "--subnet-lease-ttl", "1h"},
			map[string]string{"NODE_NAME": "n"}, []string{"--subnet-lease-ttl is not used in kube mode"}},
		{"etcd password file in kube mode", []string{"--kube-subnet-mgr", "--etcd-password-file", "/p"},
			map[string]string{"NODE_NAME": "n"}, []string{"--etcd-password-file is not used in kube mode"}},
		{"kube flag in etcd mode", []string{"--kubeconfig-file", "/etc/kc"}, nil, []string{"--kubeconfig-file is not used in etcd mode"}},
		{"net config path in etcd mode", nil, map[string]string{"NETAGENT_NET_CONFIG_PATH": "/n.json"},
			[]string{"--net-config-path is not used in etcd mode"}},
		{"prefix with two slashes", []string{"--kube-subnet-mgr", "--kube-annotation-prefix", "a.com/b/c"},
			map[string]string{"NODE_NAME": "n"}, []string{"--kube-annotation-prefix", `"a.com/b/c"`}},
		{"prefix not a DNS name", []string{"--kube-subnet-mgr", "--kube-annotation-prefix", "Not A Name"},
			map[string]string{"NODE_NAME": "n"}, []string{"--kube-annotation-prefix", `"Not A Name"`}},
		{"empty net config path", []string{"--kube-subnet-mgr", "--net-config-path", ""},
			map[string]string{"NODE_NAME": "n"}, []string{"--net-config-path: empty"}},
		{"API URL not a URL", []string{"--kube-subnet-mgr", "--kube-api-url", "10.0.0.1:6443"},
			map[string]string{"NODE_NAME": "n"}, []string{"--kube-api-url", `"10.0.0.1:6443"`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			getenv, environ := envFrom(tt.env)
			_, _, err := parseRun(tt.args, getenv, environ, &bytes.Buffer{})
			if err == nil {
				t.Fatalf("%q with %v accepted", tt.args, tt.env)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not say %q", err, w)
				}
			}
			// Through the command: a usage error (exit status 2).
			var u usageError
			if err := run(t.Context(), append([]string{"run"}, tt.args...), getenv, environ, &bytes.Buffer{}, &bytes.Buffer{}); !errors.As(err, &u) {
				t.Errorf("netagent run: %v, want a usage error", err)
			}
		})
	}
}

// TestKubeConfigAndOfflineStatus: in kube mode `config get` checks the
// --net-config-path file, `config set` refuses (the config is a
// ConfigMap), and `status` without the agent says that only the agent
// reads the leases instead of asking etcd.
func TestKubeConfigAndOfflineStatus(t *testing.T) {
	dir := t.TempDir()
	conf := filepath.Join(dir, "net-conf.json")
	if err := os.WriteFile(conf, []byte(`{"Network": "10.244.0.0/16", "Backend": {"Type": "vxlan"}}`), 0o644); err != nil {
		t.Fatal(err)
	}
	getenv, environ := envFrom(map[string]string{"FLANNELD_KUBE_SUBNET_MGR": "true"})
	var out bytes.Buffer
	if err := run(t.Context(), []string{"config", "get", "--net-config-path", conf}, getenv, environ, &out, &out); err != nil {
		t.Fatalf("config get in kube mode: %v\n%s", err, out.String())
	}
	if !strings.Contains(out.String(), conf+": valid: ") {
		t.Errorf("config get in kube mode printed %q, want the file checked", out.String())
	}
	err := run(t.Context(), []string{"config", "set", conf}, getenv, environ, &out, &out)
	if !errors.Is(err, errKubeConfigSet) {
		t.Errorf("config set in kube mode: %v, want %v", err, errKubeConfigSet)
	}

	out.Reset()
	err = run(t.Context(), []string{"status", "--json", "--status-socket", filepath.Join(dir, "none.sock"),
		"--subnet-file", filepath.Join(dir, "subnet.env")}, getenv, environ, &out, io.Discard)
	if !errors.Is(err, errNotRunning) {
		t.Fatalf("status without the agent: %v, want %v", err, errNotRunning)
	}
	var off OfflineReport
	if err := json.Unmarshal(out.Bytes(), &off); err != nil {
		t.Fatalf("%v: %s", err, out.String())
	}
	if off.Store != agent.StoreKubernetes || off.Etcd.Error != errKubeOffline.Error() || off.Etcd.Reachable {
		t.Errorf("offline status in kube mode: store %q etcd %+v, want kubernetes and etcd not read", off.Store, off.Etcd)
	}
}
