package main

import (
	"io"
	"testing"

	"github.com/netagent/netagent/agent"
)

// A second instance started with flanneld's flags only (another
// --etcd-prefix) gets its own status socket and probe port; what is given
// explicitly, by flag or environment, is kept.
func TestInstanceDefaults(t *testing.T) {
	other := "/example.com/network2"
	for _, tt := range []struct {
		name      string
		args      []string
		env       map[string]string
		socket    string
		probePort int
	}{
		{"default instance", nil, nil, "/run/netagent/netagent.sock", 8473},
		{"default prefix with a trailing slash", []string{"--etcd-prefix=/coreos.com/network/"}, nil, "/run/netagent/netagent.sock", 8473},
		{"other prefix", []string{"--etcd-prefix=" + other}, nil, agent.StatusSocketFor(other), agent.ProbePortFor(other)},
		{"other prefix from flanneld's variable", nil, map[string]string{"FLANNELD_ETCD_PREFIX": other}, agent.StatusSocketFor(other), agent.ProbePortFor(other)},
		{"explicit flags win", []string{"--etcd-prefix=" + other, "--status-socket=/tmp/x.sock", "--probe-port=9999"}, nil, "/tmp/x.sock", 9999},
		{"explicit default values win", []string{"--etcd-prefix=" + other, "--status-socket=/run/netagent/netagent.sock", "--probe-port=8473"}, nil, "/run/netagent/netagent.sock", 8473},
		{"environment wins", []string{"--etcd-prefix=" + other}, map[string]string{"NETAGENT_STATUS_SOCKET": "/tmp/y.sock", "NETAGENT_PROBE_PORT": "9000"}, "/tmp/y.sock", 9000},
	} {
		t.Run(tt.name, func(t *testing.T) {
			getenv, environ := envFrom(tt.env)
			o, _, err := parseRun(tt.args, getenv, environ, io.Discard)
			if err != nil {
				t.Fatal(err)
			}
			if o.StatusSocket != tt.socket || o.ProbePort != tt.probePort {
				t.Errorf("status socket %q probe port %d; want %q %d", o.StatusSocket, o.ProbePort, tt.socket, tt.probePort)
			}
		})
	}
	if s := agent.StatusSocketFor(other); s == agent.DefaultStatusSocket {
		t.Errorf("another prefix's socket is the default one")
	}
}
