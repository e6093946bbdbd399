package cniplugin

import (
	"context"
	"errors"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/invoke"
	"github.com/containernetworking/cni/pkg/types"
)

// TestDistConflist runs the shipped dist/10-netagent.conflist, with only the
// file locations pointed at the test's directories, with the agent not
// masquerading (so bridge masquerades).
func TestDistConflist(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	list, err := libcni.NetworkConfFromFile(filepath.Join("..", "dist", "10-netagent.conflist"))
	if err != nil {
		t.Fatal(err)
	}
	if list.Name != "netagent" || list.CNIVersion != "1.1.0" || len(list.Plugins) != 2 ||
		list.Plugins[0].Network.Type != "netagent-cni" || list.Plugins[1].Network.Type != "portmap" ||
		!list.Plugins[1].Network.Capabilities["portMappings"] {
		t.Fatalf("dist conflist: %s", list.Bytes)
	}
	named, err := libcni.InjectConf(list.Plugins[0], map[string]any{"name": list.Name, "cniVersion": list.CNIVersion})
	if err != nil {
		t.Fatal(err)
	}
	if n, err := parseNetConf(named.Bytes); err != nil || n.delegateType != "bridge" || n.Delegate["hairpinMode"] != true {
		t.Fatalf("the plugin's reading of the dist config: %+v, %v", n, err)
	}
	list.Plugins[0], err = libcni.InjectConf(list.Plugins[0], map[string]any{
		"subnetFile": e.subnetFile, "dataDir": e.dataDir, "statusSocket": e.socket,
		"ipam": map[string]any{"dataDir": e.ipamDir},
	})
	if err != nil {
		t.Fatal(err)
	}
	noMasq := leaseInfo
	noMasq.IPMasq = false
	e.writeSubnetFile(noMasq)
	serveReadyz(t, e.socket, 200)

	if err := e.status(list); err != nil {
		t.Errorf("STATUS: %v", err)
	}
	c := e.newContainer("dist")
	r := e.mustAdd(list, c)
	if ip := containerIP(t, r); !leaseInfo.Subnet.Contains(ip.Addr()) {
		t.Errorf("address %s outside the lease", ip)
	}
	if l, _, _ := c.link(t); l == nil || l.Attrs().MTU != 1450 {
		t.Errorf("eth0 %v, want MTU 1450", l)
	}
	got, err := os.ReadFile(e.cacheFile(c))
	if err != nil || !strings.Contains(string(got), `"ipMasq":true`) {
		t.Errorf("cached config %s, %v: want ipMasq true when the agent does not masquerade", got, err)
	}
	if err := e.check(list, c); err != nil {
		t.Errorf("CHECK: %v", err)
	}
	if err := e.del(list, c); err != nil {
		t.Errorf("DEL: %v", err)
	}
	if r := e.reservations(); len(r) != 0 {
		t.Errorf("reservations left: %v", r)
	}
	err = e.inHost(func(ctx context.Context) error {
		return e.cni.GCNetworkList(ctx, list, &libcni.GCArgs{ValidAttachments: []types.GCAttachment{}})
	})
	if err != nil {
		t.Errorf("GC: %v", err)
	}
}

// TestChainedAfterLoopback: when the plugin is not first in the chain, its
// result carries the previous plugins' result on.
func TestChainedAfterLoopback(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	list, err := libcni.NetworkConfFromBytes([]byte(`{"cniVersion":"1.0.0","name":"testnet","plugins":[{"type":"loopback"},` + e.pluginConf("") + `]}`))
	if err != nil {
		t.Fatal(err)
	}
	c := e.newContainer("chained")
	r := e.mustAdd(list, c)
	if len(r.Interfaces) == 0 || r.Interfaces[0].Name != "lo" {
		t.Fatalf("result lost loopback's interface: %v", r.Interfaces)
	}
	var lo, eth0 bool
	for _, ip := range r.IPs {
		switch name := r.Interfaces[*ip.Interface].Name; {
		case name == "lo" && ip.Address.IP.IsLoopback():
			lo = true
		case name == "eth0" && leaseInfo.Subnet.Contains(netip.MustParseAddr(ip.Address.IP.String())):
			eth0 = true
		}
	}
	if !lo || !eth0 {
		t.Errorf("result addresses %v: want lo's and eth0's, each on its interface", r.IPs)
	}
	if err := e.check(list, c); err != nil {
		t.Errorf("CHECK: %v", err)
	}
	if err := e.del(list, c); err != nil {
		t.Errorf("DEL: %v", err)
	}
}

// TestCraftedAttachment: a container ID or interface name that would lead
// out of the data directory is refused with code 4 and nothing is written.
func TestCraftedAttachment(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	list := e.conflist("1.1.0", "")
	c := e.newContainer("x")

	// libcni refuses such IDs itself.
	bad := container{id: "../../etc/x", ns: c.ns}
	if _, err := e.add(list, bad); err == nil {
		t.Error("libcni ADD with a crafted container ID succeeded")
	}

	// A runtime that does not check: the plugin refuses.
	conf, err := libcni.InjectConf(list.Plugins[0], map[string]any{"name": "testnet", "cniVersion": "1.1.0"})
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct{ id, ifName string }{
		{"../../etc/x", "eth0"},
		{"x", "..eth0"},
		{"x", "eth0@x"},
	} {
		for _, verb := range []string{"ADD", "DEL", "CHECK"} {
			err := e.inHost(func(ctx context.Context) error {
				args := &invoke.Args{Command: verb, ContainerID: tt.id, NetNS: c.ns.Path(), IfName: tt.ifName, Path: e.cni.Path[0]}
				if verb == "ADD" {
					_, err := invoke.ExecPluginWithResult(ctx, filepath.Join(e.cni.Path[0], "netagent-cni"), conf.Bytes, args, nil)
					return err
				}
				return invoke.ExecPluginWithoutResult(ctx, filepath.Join(e.cni.Path[0], "netagent-cni"), conf.Bytes, args, nil)
			})
			if cniCode(err) != types.ErrInvalidEnvironmentVariables {
				t.Errorf("%s with container ID %q ifname %q: %v, want code 4", verb, tt.id, tt.ifName, err)
			}
		}
	}
	if _, err := os.Stat(filepath.Join(e.dir, "etc")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("something was written outside the data directory: %v", err)
	}
	if _, err := os.Stat(e.dataDir); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("the data directory was created: %v", err)
	}
	if l, _, _ := c.link(t); l != nil {
		t.Error("a refused ADD created eth0")
	}
	if r := e.reservations(); len(r) != 0 {
		t.Errorf("a refused ADD reserved addresses: %v", r)
	}
}

// TestBadInput: what stdin and the environment get wrong comes back as a
// CNI error with the spec's code.
func TestBadInput(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	c := e.newContainer("bad")
	plugin := filepath.Join(cniPath(t), "netagent-cni")
	tests := []struct {
		name, conf string
		code       uint
	}{
		{"malformed JSON", `{"cniVersion":"1.1.0","name":`, types.ErrDecodingFailure},
		{"no name", `{"cniVersion":"1.1.0","type":"netagent-cni"}`, types.ErrInvalidNetworkConfig},
		{"delegate path", `{"cniVersion":"1.1.0","name":"n","type":"netagent-cni","delegate":{"type":"/bin/sh"}}`, types.ErrInvalidNetworkConfig},
		{"relative subnet file", `{"cniVersion":"1.1.0","name":"n","type":"netagent-cni","subnetFile":"subnet.env"}`, types.ErrInvalidNetworkConfig},
		{"unsupported version", `{"cniVersion":"0.2.0","name":"n","type":"netagent-cni"}`, types.ErrIncompatibleCNIVersion},
	}
	for _, tt := range tests {
		err := e.inHost(func(ctx context.Context) error {
			args := &invoke.Args{Command: "ADD", ContainerID: "bad", NetNS: c.ns.Path(), IfName: "eth0", Path: e.cni.Path[0]}
			_, err := invoke.ExecPluginWithResult(ctx, plugin, []byte(tt.conf), args, nil)
			return err
		})
		if cniCode(err) != tt.code {
			t.Errorf("%s: %v, want code %d", tt.name, err, tt.code)
		}
	}
	// A malformed subnet file.
	if err := os.WriteFile(e.subnetFile, []byte("FLANNEL_MTU=abc\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := e.add(e.conflist("1.1.0", ""), c); cniCode(err) != types.ErrDecodingFailure || !strings.Contains(err.Error(), "FLANNEL_MTU") {
		t.Errorf("ADD with a malformed subnet file: %v, want code 6 naming the key", err)
	}
	// The plugin's VERSION answer.
	err := e.inHost(func(ctx context.Context) error {
		info, err := e.cni.GetVersionInfo(ctx, "netagent-cni")
		if err != nil {
			return err
		}
		if got := strings.Join(info.SupportedVersions(), ","); got != "0.3.0,0.3.1,0.4.0,1.0.0,1.1.0" {
			t.Errorf("supported versions %s", got)
		}
		return nil
	})
	if err != nil {
		t.Error(err)
	}
}
