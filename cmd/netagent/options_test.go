package main

import (
	"bytes"
	"context"
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/netagent/netagent/agent"
)

func envFrom(m map[string]string) (func(string) string, []string) {
	var environ []string
	for k, v := range m {
		environ = append(environ, k+"="+v)
	}
	return func(k string) string { return m[k] }, environ
}

// parseCase is a command line and environment for parseRun, and what the
// options must then hold.
type parseCase struct {
	name  string
	args  []string
	env   map[string]string
	check func(t *testing.T, o *optsView)
}

// runParseCases runs parseRun on each case and its check on the options.
func runParseCases(t *testing.T, tests []parseCase) {
	t.Helper()
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			getenv, environ := envFrom(tt.env)
			o, _, err := parseRun(tt.args, getenv, environ, &bytes.Buffer{})
			if err != nil {
				t.Fatalf("parseRun: %v", err)
			}
			tt.check(t, &optsView{o})
		})
	}
}

func TestParseRun(t *testing.T) {
	tests := []parseCase{
		{
			name: "defaults",
			check: func(t *testing.T, o *optsView) {
				o.eq(t, "endpoints", o.Etcd.Endpoints, []string{"http://127.0.0.1:2379"})
				o.eq(t, "prefix", o.Etcd.Prefix, "/coreos.com/network")
				o.eq(t, "subnet file", o.SubnetFile, "/run/flannel/subnet.env")
				o.eq(t, "ttl", o.LeaseTTL, 24*time.Hour)
				o.eq(t, "margin", o.RenewMargin, time.Hour)
				o.eq(t, "masq", o.IPMasq, false)
			},
		},
		{
			name: "flags as flanneld names them",
			args: []string{"--etcd-endpoints=http://10.0.0.1:2379,http://10.0.0.2:2379", "--etcd-prefix=/atomic.io/network",
				"--iface=eth1", "--iface=10.1.2.3", "--iface-regex=^192\\.168\\.", "--iface-can-reach=8.8.8.8",
				"--public-ip=203.0.113.7", "--subnet-file=/tmp/s.env", "--docker-opts-file=/tmp/d", "--ip-masq",
				"--subnet-lease-renew-margin=30"},
			check: func(t *testing.T, o *optsView) {
				o.eq(t, "endpoints", o.Etcd.Endpoints, []string{"http://10.0.0.1:2379", "http://10.0.0.2:2379"})
				o.eq(t, "prefix", o.Etcd.Prefix, "/atomic.io/network")
				o.eq(t, "iface", o.Iface.Ifaces, []string{"eth1", "10.1.2.3"})
				o.eq(t, "regex", o.Iface.IfaceRegex, []string{"^192\\.168\\."})
				o.eq(t, "can reach", o.Iface.CanReach, netip.MustParseAddr("8.8.8.8"))
				o.eq(t, "public ip", o.Iface.PublicIP, netip.MustParseAddr("203.0.113.7"))
				o.eq(t, "subnet file", o.SubnetFile, "/tmp/s.env")
				o.eq(t, "docker file", o.DockerOptsFile, "/tmp/d")
				o.eq(t, "masq", o.IPMasq, true)
				o.eq(t, "margin", o.RenewMargin, 30*time.Minute)
			},
		},
		{
			name: "environment fills what flags leave unset; flags win",
			args: []string{"--etcd-prefix=/flag"},
			env: map[string]string{
				"NETAGENT_ETCD_PREFIX":    "/env",
				"NETAGENT_IFACE":          "eth0,eth1",
				"NETAGENT_IP_MASQ":        "true",
				"FLANNELD_ETCD_ENDPOINTS": "http://192.0.2.1:2379",
				"FLANNELD_SUBNET_FILE":    "/flannel.env",
				"NETAGENT_SUBNET_FILE":    "/netagent.env",
			},
			check: func(t *testing.T, o *optsView) {
				o.eq(t, "prefix", o.Etcd.Prefix, "/flag")
				o.eq(t, "iface", o.Iface.Ifaces, []string{"eth0", "eth1"})
				o.eq(t, "masq", o.IPMasq, true)
				o.eq(t, "endpoints", o.Etcd.Endpoints, []string{"http://192.0.2.1:2379"})
				o.eq(t, "subnet file", o.SubnetFile, "/netagent.env")
			},
		},
		{
			name: "renew margin as a duration",
			args: []string{"--subnet-lease-ttl=5s", "--subnet-lease-renew-margin=2s"},
			check: func(t *testing.T, o *optsView) {
				o.eq(t, "ttl", o.LeaseTTL, 5*time.Second)
				o.eq(t, "margin", o.RenewMargin, 2*time.Second)
			},
		},
		{
			name: "etcd connection timeouts by default",
			check: func(t *testing.T, o *optsView) {
				o.eq(t, "dial timeout", o.Etcd.DialTimeout, agent.DefaultEtcdDialTimeout)
				o.eq(t, "keepalive timeout", o.Etcd.KeepAliveTimeout, agent.DefaultEtcdKeepAliveTimeout)
			},
		},
		{
			name: "etcd connection timeouts set",
			args: []string{"--etcd-dial-timeout=45s"},
			env:  map[string]string{"NETAGENT_ETCD_KEEPALIVE_TIMEOUT": "1m"},
			check: func(t *testing.T, o *optsView) {
				o.eq(t, "dial timeout", o.Etcd.DialTimeout, 45*time.Second)
				o.eq(t, "keepalive timeout", o.Etcd.KeepAliveTimeout, time.Minute)
			},
		},
	}
	runParseCases(t, tests)
}

func TestParseRunErrors(t *testing.T) {
	tests := []struct {
		name string
		args []string
		env  map[string]string
		want string // substring of the error
	}{
		{"unknown flag", []string{"--etcd-endpoint=x"}, nil, "etcd-endpoint"},
		{"bad endpoint", []string{"--etcd-endpoints=10.0.0.1:2379"}, nil, "--etcd-endpoints"},
		{"bad public ip", []string{"--public-ip=300.1.1.1"}, nil, "public-ip"},
		{"v6 as public ip", []string{"--public-ip=fd00::1"}, nil, "--public-ip"},
		{"bad regex", []string{"--iface-regex=("}, nil, "--iface-regex"},
		{"margin above ttl", []string{"--subnet-lease-ttl=10s", "--subnet-lease-renew-margin=20s"}, nil, "--subnet-lease-renew-margin"},
		{"bad margin", []string{"--subnet-lease-renew-margin=soon"}, nil, "subnet-lease-renew-margin"},
		{"cert without key", []string{"--etcd-certfile=/c.pem"}, nil, "--etcd-keyfile"},
		{"bad env value", nil, map[string]string{"NETAGENT_IP_MASQ": "maybe"}, "NETAGENT_IP_MASQ"},
		{"bad log level", []string{"--log-level=loud"}, nil, "--log-level"},
		{"stray argument", []string{"eth0"}, nil, `"eth0"`},
		{"password without user", []string{"--etcd-password=s3cret-pw"}, nil, "--etcd-username"},
		{"dial timeout too short", []string{"--etcd-dial-timeout=100ms"}, nil, "--etcd-dial-timeout"},
		{"keepalive timeout zero", []string{"--etcd-keepalive-timeout=0"}, nil, "--etcd-keepalive-timeout"},
		{"endpoint port too large", []string{"--etcd-endpoints=http://10.0.0.1:99999"}, nil, "--etcd-endpoints: \"http://10.0.0.1:99999\" is not a URL such as http://10.0.0.1:2379: port 99999 is not between 1 and 65535"},
		{"endpoint port 0", []string{"--etcd-endpoints=http://10.0.0.1:0"}, nil, "port 0 is not between 1 and 65535"},
		{"endpoint port not a number", []string{"--etcd-endpoints=https://10.0.0.1:x"}, nil, "--etcd-endpoints"},
		{"endpoint empty port", []string{"--etcd-endpoints=http://10.0.0.1:"}, nil, "empty port"},
		{"endpoint without host", []string{"--etcd-endpoints=http://:2379"}, nil, "no host"},
		{"endpoint with path", []string{"--etcd-endpoints=http://10.0.0.1:2379/v3"}, nil, "a path, query or fragment"},
		{"endpoint with credentials", []string{"--etcd-endpoints=http://root:s3cret-pw@10.0.0.1:2379"}, nil, "--etcd-username"},
		{"endpoint scheme", []string{"--etcd-endpoints=tcp://10.0.0.1:2379"}, nil, `scheme "tcp"`},
		{"second endpoint bad", []string{"--etcd-endpoints=http://10.0.0.1:2379,http://10.0.0.2:65536"}, nil, "http://10.0.0.2:65536"},
		{"missing cafile", []string{"--etcd-cafile=/nonexistent/ca.pem"}, nil, "--etcd-cafile: open /nonexistent/ca.pem"},
		{"missing certfile", []string{"--etcd-certfile=/nonexistent/c.pem", "--etcd-keyfile=/nonexistent/k.pem"}, nil, "--etcd-certfile: open /nonexistent/c.pem"},
		{"missing keyfile", []string{"--etcd-certfile=/nonexistent/c.pem", "--etcd-keyfile=/nonexistent/k.pem"}, nil, "--etcd-keyfile: open /nonexistent/k.pem"},
		{"cafile a directory", []string{"--etcd-cafile=/"}, nil, "--etcd-cafile: read /: is a directory"},
		{"memory limit not a size", []string{"--memory-limit=lots"}, nil, "memory-limit"},
		{"memory limit zero", []string{"--memory-limit=0"}, nil, "memory-limit"},
		{"memory limit negative", nil, map[string]string{"NETAGENT_MEMORY_LIMIT": "-1MiB"}, "NETAGENT_MEMORY_LIMIT"},
		{"memory limit too large", []string{"--memory-limit=9000000TiB"}, nil, "too large"},
		{"missing password file", []string{"--etcd-username=root", "--etcd-password-file=/nonexistent/pw"}, nil, "--etcd-password-file: open /nonexistent/pw"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			getenv, environ := envFrom(tt.env)
			_, _, err := parseRun(tt.args, getenv, environ, &bytes.Buffer{})
			if err == nil {
				t.Fatalf("parseRun(%q) succeeded, want an error naming %q", tt.args, tt.want)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %q does not name %q", err, tt.want)
			}
			if strings.Contains(err.Error(), "s3cret-pw") {
				t.Fatalf("error %q shows the password", err)
			}
		})
	}
}

func TestUnknownEnvironmentVariableIsWarned(t *testing.T) {
	getenv, environ := envFrom(map[string]string{"NETAGENT_ETCD_ENDPOIINTS": "x", "NETAGENT_IP_MASQ": "true"})
	_, warnings, err := parseRun(nil, getenv, environ, &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	if len(warnings) != 1 || !strings.Contains(warnings[0], "NETAGENT_ETCD_ENDPOIINTS") {
		t.Fatalf("warnings = %q, want one naming NETAGENT_ETCD_ENDPOIINTS", warnings)
	}
}

func TestPasswordFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "pw")
	if err := os.WriteFile(path, []byte("s3cret-pw\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	o, _, err := parseRun([]string{"--etcd-username=root", "--etcd-password-file=" + path}, os.Getenv, nil, &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	if o.Etcd.Password != "s3cret-pw" {
		t.Fatalf("password = %q", o.Etcd.Password)
	}
	var logs bytes.Buffer
	newLogger(&logs, "info", "json").Info("options", "etcd", o.Etcd)
	if strings.Contains(logs.String(), "s3cret-pw") || !strings.Contains(logs.String(), `"username":"root"`) {
		t.Fatalf("log line %s shows the password or lacks the user", logs.String())
	}
}

func TestCommands(t *testing.T) {
	var out, errOut bytes.Buffer
	if err := run(context.Background(), []string{"version"}, os.Getenv, nil, &out, &errOut); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(out.String(), "netagent ") {
		t.Fatalf("version printed %q", out.String())
	}
	err := run(context.Background(), []string{"frobnicate"}, os.Getenv, nil, &out, &errOut)
	if err == nil || !strings.Contains(err.Error(), "frobnicate") {
		t.Fatalf("unknown command: err = %v", err)
	}
}

// TestTLSFileContents: TLS files that exist but hold no certificate or key
// are named by their flag too.
func TestTLSFileContents(t *testing.T) {
	junk := filepath.Join(t.TempDir(), "junk.pem")
	if err := os.WriteFile(junk, []byte("not a certificate\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--etcd-cafile=" + junk}, "--etcd-cafile " + junk + ": no PEM certificate in it"},
		{[]string{"--etcd-certfile=" + junk, "--etcd-keyfile=" + junk}, "--etcd-certfile " + junk + " and --etcd-keyfile " + junk},
	} {
		_, _, err := parseRun(tc.args, func(string) string { return "" }, nil, &bytes.Buffer{})
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("parseRun(%q) = %v; want an error containing %q", tc.args, err, tc.want)
		}
	}
}

// TestBadInputExitsTwo: a bad flag value (a missing TLS file, a malformed
// endpoint) is bad input, exit status 2 (a usage error), for every command
// that takes the etcd flags.
func TestBadInputExitsTwo(t *testing.T) {
	for _, args := range [][]string{
		{"run", "--etcd-cafile=/nonexistent/ca.pem"},
		{"run", "--etcd-endpoints=http://10.0.0.1:99999"},
		{"status", "--etcd-certfile=/nonexistent/c.pem", "--etcd-keyfile=/nonexistent/k.pem"},
		{"config", "get", "--etcd-cafile=/nonexistent/ca.pem"},
		{"config", "set", "-", "--etcd-endpoints=http://10.0.0.1:99999"},
	} {
		err := run(context.Background(), args, func(string) string { return "" }, nil, &bytes.Buffer{}, &bytes.Buffer{})
		var u usageError
		if !errors.As(err, &u) || !strings.Contains(err.Error(), "--etcd-") {
			t.Errorf("%q: %v; want a usage error (exit 2) naming the flag", args, err)
		}
	}
}
