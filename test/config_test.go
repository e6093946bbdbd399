package test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestConfigCommand: `netagent config` validates a file, shows the config
// in etcd, and writes a file to etcd only when it validates.
func TestConfigCommand(t *testing.T) {
	t.Parallel()
	c := newCluster(t, clusterOptions{Hosts: 1, Config: vxlanConfig})
	h := c.hosts()[0]
	bin := binaries(t)["./cmd/netagent"]
	etcd := "--etcd-endpoints=" + strings.Join(c.lab.EtcdEndpoints(), ",")
	dir := t.TempDir()
	write := func(name, text string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	good := write("good.json", `{"Network":"10.6.0.0/16","SubnetLen":25,"Backend":{"Type":"host-gw"}}`)
	typo := write("typo.json", `{"Network":"10.6.0.0/16","SubnetLen":33}`)
	badVNI := write("vni.json", `{"Network":"10.6.0.0/16","Backend":{"Type":"vxlan","VNI":"x"}}`)
	unknown := write("unknown.json", `{"Network":"10.6.0.0/16","SubnetMn":"10.6.3.0"}`)

	if out, err := c.runSplitText(h.NS, bin, "config", "check", good); err != nil || !strings.Contains(out, "valid: network=10.6.0.0/16 subnetlen=25 backend=host-gw") {
		t.Errorf("check good: %v: %s", err, out)
	}
	for _, f := range []string{typo, badVNI} {
		if out, err := c.runSplitText(h.NS, bin, "config", "check", f); err == nil {
			t.Errorf("check %s passed: %s", filepath.Base(f), out)
		}
	}
	if out, err := c.runSplitText(h.NS, bin, "config", "check", unknown); err != nil || !strings.Contains(out, `unknown field "SubnetMn"`) {
		t.Errorf("check with an unknown field: want valid with a warning: %v: %s", err, out)
	}

	get := func() string {
		t.Helper()
		out, err := c.runSplitText(h.NS, bin, "config", "get", etcd)
		if err != nil {
			t.Fatalf("config get: %v: %s", err, out)
		}
		return out
	}
	if out := get(); !strings.Contains(out, vxlanConfig) || !strings.Contains(out, "valid: network=10.5.0.0/16") {
		t.Errorf("config get: %s", out)
	}
	// A typo does not reach the cluster.
	if out, err := c.runSplitText(h.NS, bin, "config", "set", typo, etcd); err == nil || !strings.Contains(out, "nothing written") {
		t.Errorf("set of an invalid file: %v: %s", err, out)
	}
	if out := get(); !strings.Contains(out, vxlanConfig) {
		t.Errorf("the invalid file reached etcd: %s", out)
	}
	if out, err := c.runSplitText(h.NS, bin, "config", "set", good, etcd); err != nil || !strings.Contains(out, "written") {
		t.Errorf("set good: %v: %s", err, out)
	}
	if out := get(); !strings.Contains(out, `"10.6.0.0/16"`) || !strings.Contains(out, "backend=host-gw") {
		t.Errorf("config get after set: %s", out)
	}
}
