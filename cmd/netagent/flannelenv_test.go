package main

import (
	"bytes"
	"flag"
	"strings"
	"testing"
)

// TestFlannelPackagingPrecedence: each source of a setting against the next
// one down: flag > NETAGENT_* > FLANNEL_OPTIONS > FLANNEL_ETCD_ENDPOINTS /
// FLANNEL_ETCD_PREFIX > FLANNEL_ETCD / FLANNEL_ETCD_KEY > FLANNELD_* >
// default.
func TestFlannelPackagingPrecedence(t *testing.T) {
	const (
		flagEP     = "http://192.0.2.1:2379"
		netagentEP = "http://192.0.2.2:2379"
		optionsEP  = "http://192.0.2.3:2379"
		packEP     = "http://192.0.2.4:2379"
		oldPackEP  = "http://192.0.2.5:2379"
		flanneldEP = "http://192.0.2.6:2379"
	)
	all := map[string]string{
		"NETAGENT_ETCD_ENDPOINTS": netagentEP,
		"FLANNEL_OPTIONS":         "-etcd-endpoints=" + optionsEP,
		"FLANNEL_ETCD_ENDPOINTS":  packEP,
		"FLANNEL_ETCD":            oldPackEP,
		"FLANNELD_ETCD_ENDPOINTS": flanneldEP,
	}
	// Row 0 has every source; each next row drops the one that won.
	drop := []string{"", "", "NETAGENT_ETCD_ENDPOINTS", "FLANNEL_OPTIONS", "FLANNEL_ETCD_ENDPOINTS", "FLANNEL_ETCD", "FLANNELD_ETCD_ENDPOINTS"}
	want := []string{flagEP, netagentEP, optionsEP, packEP, oldPackEP, flanneldEP, "http://127.0.0.1:2379"}
	env := map[string]string{}
	for k, v := range all {
		env[k] = v
	}
	for i, w := range want {
		delete(env, drop[i])
		var args []string
		if i == 0 {
			args = []string{"--etcd-endpoints=" + flagEP}
		}
		getenv, environ := envFrom(env)
		o, _, err := parseRun(args, getenv, environ, &bytes.Buffer{})
		if err != nil {
			t.Fatalf("row %d: %v", i, err)
		}
		if len(o.Etcd.Endpoints) != 1 || o.Etcd.Endpoints[0] != w {
			t.Errorf("row %d (env %v, args %q): endpoints %v, want %s", i, env, args, o.Etcd.Endpoints, w)
		}
	}
}

// TestAtomicSysconfig: the settings of a Project Atomic host's
// /etc/sysconfig/flanneld, as netagent.service passes them.
func TestAtomicSysconfig(t *testing.T) {
	getenv, environ := envFrom(map[string]string{
		"FLANNEL_ETCD_ENDPOINTS": "http://10.0.0.10:2379,http://10.0.0.11:2379",
		"FLANNEL_ETCD_PREFIX":    "/atomic.io/network",
		"FLANNEL_OPTIONS":        "-iface=eth1 -ip-masq --subnet-lease-renew-margin=30  -v=2 -logtostderr",
	})
	o, warnings, err := parseRun(nil, getenv, environ, &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	v := optsView{o}
	v.eq(t, "endpoints", o.Etcd.Endpoints, []string{"http://10.0.0.10:2379", "http://10.0.0.11:2379"})
	v.eq(t, "prefix", o.Etcd.Prefix, "/atomic.io/network")
	v.eq(t, "iface", o.Iface.Ifaces, []string{"eth1"})
	v.eq(t, "masq", o.IPMasq, true)
	v.eq(t, "margin", o.RenewMargin.Minutes(), 30.0)
	if len(warnings) != 2 || !strings.Contains(warnings[0], "-logtostderr") || !strings.Contains(warnings[1], "-v ") {
		t.Errorf("warnings = %q, want one each for flanneld's -logtostderr and -v", warnings)
	}
}

func TestFlannelPackagingEnvDetails(t *testing.T) {
	tests := []parseCase{
		{
			name: "old names of older packages",
			env:  map[string]string{"FLANNEL_ETCD": "http://10.0.0.10:2379", "FLANNEL_ETCD_KEY": "/atomic.io/network"},
			check: func(t *testing.T, o *optsView) {
				o.eq(t, "endpoints", o.Etcd.Endpoints, []string{"http://10.0.0.10:2379"})
				o.eq(t, "prefix", o.Etcd.Prefix, "/atomic.io/network")
			},
		},
		{
			name: "FLANNEL_OPTIONS: repeated flags accumulate; the last of a single one wins",
			env:  map[string]string{"FLANNEL_OPTIONS": "--iface=eth1 -iface=eth2 -subnet-file=/a -subnet-file=/b"},
			check: func(t *testing.T, o *optsView) {
				o.eq(t, "iface", o.Iface.Ifaces, []string{"eth1", "eth2"})
				o.eq(t, "subnet file", o.SubnetFile, "/b")
			},
		},
		{
			name: "a flag on the command line replaces FLANNEL_OPTIONS' values, it does not add to them",
			args: []string{"--iface=eth9"},
			env:  map[string]string{"FLANNEL_OPTIONS": "-iface=eth1", "FLANNEL_ETCD_PREFIX": "/atomic.io/network"},
			check: func(t *testing.T, o *optsView) {
				o.eq(t, "iface", o.Iface.Ifaces, []string{"eth9"})
				o.eq(t, "prefix", o.Etcd.Prefix, "/atomic.io/network")
			},
		},
		{
			name: "NETAGENT_* over the packaging prefix",
			env:  map[string]string{"NETAGENT_ETCD_PREFIX": "/netagent", "FLANNEL_ETCD_PREFIX": "/atomic.io/network", "FLANNEL_OPTIONS": "-etcd-prefix=/opts"},
			check: func(t *testing.T, o *optsView) {
				o.eq(t, "prefix", o.Etcd.Prefix, "/netagent")
			},
		},
		{
			name: "FLANNEL_OPTIONS a boolean flag set false",
			env:  map[string]string{"FLANNEL_OPTIONS": "-ip-masq=false", "FLANNELD_IP_MASQ": "true"},
			check: func(t *testing.T, o *optsView) {
				o.eq(t, "masq", o.IPMasq, false)
			},
		},
	}
	runParseCases(t, tests)
}

func TestFlannelOptionsErrors(t *testing.T) {
	tests := []struct {
		name    string
		options string
		want    string
	}{
		{"a flanneld flag netagent lacks", "-iptables-forward-rules=false", "iptables-forward-rules"},
		{"a stray argument", "-ip-masq eth0", `"eth0"`},
		{"a bad value", "-subnet-lease-renew-margin=soon", "subnet-lease-renew-margin"},
		{"the password is not shown", "-etcd-username=u -etcd-password=s3cret-pw -bogus", "bogus"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			getenv, environ := envFrom(map[string]string{"FLANNEL_OPTIONS": tt.options})
			_, _, err := parseRun(nil, getenv, environ, &bytes.Buffer{})
			if err == nil {
				t.Fatalf("FLANNEL_OPTIONS=%q accepted", tt.options)
			}
			if !strings.Contains(err.Error(), tt.want) || !strings.Contains(err.Error(), "FLANNEL_OPTIONS") {
				t.Errorf("error %q does not name %q and FLANNEL_OPTIONS", err, tt.want)
			}
			if strings.Contains(err.Error(), "s3cret-pw") {
				t.Errorf("error %q shows the password", err)
			}
		})
	}
}

// TestStatusReadsPackagingEtcd: `netagent status` and `config` find etcd
// through the packaging variables as the agent does.
func TestStatusReadsPackagingEtcd(t *testing.T) {
	fs := flag.NewFlagSet("status", flag.ContinueOnError)
	c := addEtcdCommand(fs)
	if err := fs.Parse(nil); err != nil {
		t.Fatal(err)
	}
	getenv, _ := envFrom(map[string]string{"FLANNEL_ETCD_ENDPOINTS": "http://10.0.0.10:2379", "FLANNEL_ETCD_PREFIX": "/atomic.io/network"})
	if err := c.finish(fs, getenv); err != nil {
		t.Fatal(err)
	}
	if c.opts.Prefix != "/atomic.io/network" || len(c.opts.Endpoints) != 1 || c.opts.Endpoints[0] != "http://10.0.0.10:2379" {
		t.Errorf("etcd options %+v, want the packaging variables'", c.opts)
	}
}
