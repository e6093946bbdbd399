package main

import (
	"io"
	"strings"
	"testing"
	"time"

	"github.com/netagent/netagent/agent"
	"github.com/netagent/netagent/probe"
)

func TestProbeFlags(t *testing.T) {
	tests := []struct {
		name    string
		args    []string
		env     map[string]string
		want    func(o *agent.Options) bool
		wantErr string
	}{
		{name: "defaults", want: func(o *agent.Options) bool {
			return o.Probe && o.ProbeInterval == probe.DefaultInterval && o.ProbeRate == probe.DefaultRate &&
				o.ProbePort == probe.DefaultPort && o.TxCsumOffload == agent.OffloadAuto && o.AutoCsumOffload && !o.NoRepair
		}},
		{name: "flags", args: []string{"--probe=false", "--probe-interval=2s", "--probe-rate=5", "--probe-port=9000",
			"--vxlan-tx-csum-offload=off", "--vxlan-auto-csum-offload=false", "--dataplane-repair=false"},
			want: func(o *agent.Options) bool {
				return !o.Probe && o.ProbeInterval == 2*time.Second && o.ProbeRate == 5 && o.ProbePort == 9000 &&
					o.TxCsumOffload == agent.OffloadOff && !o.AutoCsumOffload && o.NoRepair
			}},
		{name: "environment", env: map[string]string{"NETAGENT_PROBE_RATE": "50", "NETAGENT_DATAPLANE_REPAIR": "false",
			"NETAGENT_VXLAN_TX_CSUM_OFFLOAD": "on"},
			want: func(o *agent.Options) bool {
				return o.ProbeRate == 50 && o.NoRepair && o.TxCsumOffload == agent.OffloadOn
			}},
		{name: "bare repair flag", args: []string{"--dataplane-repair"}, want: func(o *agent.Options) bool { return !o.NoRepair }},
		{name: "bad offload", args: []string{"--vxlan-tx-csum-offload=maybe"}, wantErr: "--vxlan-tx-csum-offload"},
		{name: "bad rate", args: []string{"--probe-rate=0"}, wantErr: "--probe-rate"},
		{name: "bad interval", args: []string{"--probe-interval=1ms"}, wantErr: "--probe-interval"},
		{name: "bad port", args: []string{"--probe-port=70000"}, wantErr: "--probe-port"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			getenv, environ := envFrom(tt.env)
			o, _, err := parseRun(tt.args, getenv, environ, io.Discard)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err %v, want one naming %s", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !tt.want(o) {
				t.Errorf("options %+v", *o)
			}
		})
	}
}

func TestCheckPeers(t *testing.T) {
	ok := &agent.PeerProbeReport{Probed: true, Reachable: true}
	tests := []struct {
		name  string
		peers []agent.PeerReport
		want  string // "" for no error
	}{
		{"none", nil, ""},
		{"all fine", []agent.PeerReport{{Subnet: "10.5.1.0/24", Programmed: true, Probe: ok}, {Subnet: "10.5.2.0/24", Programmed: true}}, ""},
		{"not probed yet", []agent.PeerReport{{Subnet: "10.5.1.0/24", Programmed: true, Probe: &agent.PeerProbeReport{}}}, ""},
		{"unreachable", []agent.PeerReport{{Subnet: "10.5.1.0/24", Programmed: true, Probe: ok},
			{Subnet: "10.5.2.0/24", Programmed: true, Probe: &agent.PeerProbeReport{Probed: true, Cause: "no-answer"}}},
			"1 of 2 peers: 10.5.2.0/24 unreachable (no-answer)"},
		{"not programmed", []agent.PeerReport{{Subnet: "10.5.1.0/24"}}, "10.5.1.0/24 kernel entries not as wanted"},
		{"refused", []agent.PeerReport{{Subnet: "10.5.1.0/24", Programmed: true, Probe: ok}},
			"1 lease keys refused: 10.5.1.0-24-x (subnet)"},
	}
	refused := map[string][]agent.RefusedReport{"refused": {{Key: "10.5.1.0-24-x", Subnet: "10.5.1.0/24", Reason: "subnet", Winner: "10.5.1.0-24"}}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := checkPeers(&agent.Report{Peers: tt.peers, Refused: refused[tt.name]})
			switch {
			case tt.want == "" && err != nil:
				t.Errorf("err %v, want none", err)
			case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want) || strings.Contains(err.Error(), "\n")):
				t.Errorf("err %v, want one line with %q", err, tt.want)
			}
		})
	}
}
