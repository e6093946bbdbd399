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
	"github.com/containernetworking/cni/pkg/types"
	types100 "github.com/containernetworking/cni/pkg/types/100"
)

// TestLifecycle runs ADD, CHECK and DEL through libcni on three containers,
// with portmap chained after the plugin.
func TestLifecycle(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	list := e.conflist("1.1.0", "")
	cs := []container{e.newContainer("c0"), e.newContainer("c1"), e.newContainer("c2")}

	seen := map[netip.Addr]bool{}
	for _, c := range cs {
		var res types.Result
		err := e.inHost(func(ctx context.Context) (err error) {
			res, err = e.cni.AddNetworkList(ctx, list, c.rt(map[string]any{
				"portMappings": []map[string]any{{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}},
			}))
			return err
		})
		if err != nil {
			t.Fatalf("ADD %s: %v", c.id, err)
		}
		if res.Version() != "1.1.0" {
			t.Errorf("result version %s", res.Version())
		}
		r, err := types100.NewResultFromResult(res)
		if err != nil {
			t.Fatal(err)
		}
		ip := containerIP(t, r)
		if !leaseInfo.Subnet.Contains(ip.Addr()) || ip.Bits() != 24 || ip.Addr() == netip.MustParseAddr("10.5.58.1") {
			t.Errorf("%s got %s, want an address of 10.5.58.0/24 other than the gateway", c.id, ip)
		}
		if seen[ip.Addr()] {
			t.Errorf("%s got %s twice", c.id, ip)
		}
		seen[ip.Addr()] = true

		// The kernel state in the container.
		l, addrs, routes := c.link(t)
		if l == nil {
			t.Fatalf("%s has no eth0", c.id)
		}
		if l.Attrs().MTU != 1450 {
			t.Errorf("%s eth0 MTU %d, want FLANNEL_MTU 1450", c.id, l.Attrs().MTU)
		}
		if len(addrs) != 1 || addrs[0].IPNet.String() != ip.String() {
			t.Errorf("%s eth0 addresses %v, want %s", c.id, addrs, ip)
		}
		var toNetwork, dflt bool
		for _, r := range routes {
			gw := r.Gw.String()
			switch {
			case r.Dst != nil && r.Dst.String() == "10.5.0.0/16" && gw == "10.5.58.1":
				toNetwork = true
			case (r.Dst == nil || r.Dst.String() == "0.0.0.0/0") && gw == "10.5.58.1":
				dflt = true
			}
		}
		if !toNetwork || !dflt {
			t.Errorf("%s routes %v: want 10.5.0.0/16 and default via 10.5.58.1", c.id, routes)
		}

		// The cached config: mode 0600, exactly the delegate config.
		st, err := os.Stat(e.cacheFile(c))
		if err != nil || st.Mode().Perm() != 0o600 {
			t.Fatalf("cache file %s: %v %v", e.cacheFile(c), st, err)
		}
		got, _ := os.ReadFile(e.cacheFile(c))
		want := `{"cniVersion":"1.1.0","name":"testnet","type":"bridge","isGateway":true,"isDefaultGateway":true,"hairpinMode":true,
			"ipMasq":false,"mtu":1450,"ipam":{"type":"host-local","dataDir":"` + e.ipamDir + `",
			"ranges":[[{"subnet":"10.5.58.0/24"}]],"routes":[{"dst":"10.5.0.0/16"}]}}`
		if !jsonEqual(t, got, []byte(want)) {
			t.Errorf("cached config\n got %s\nwant %s", got, want)
		}
	}
	if st, err := os.Stat(e.dataDir); err != nil || st.Mode().Perm() != 0o700 {
		t.Errorf("data dir: %v %v, want mode 0700", st, err)
	}
	if n := len(e.reservations()); n != 3 {
		t.Errorf("%d host-local reservations, want 3", n)
	}

	for _, c := range cs {
		if err := e.check(list, c); err != nil {
			t.Errorf("CHECK %s: %v", c.id, err)
		}
	}

	// The lease changed under the container: CHECK says so.
	moved := leaseInfo
	moved.Subnet = netip.MustParsePrefix("10.5.60.0/24")
	e.writeSubnetFile(moved)
	if err := e.check(list, cs[0]); err == nil || !strings.Contains(err.Error(), "outside this host's current lease 10.5.60.0/24") {
		t.Errorf("CHECK after the lease changed: %v", err)
	}
	e.writeSubnetFile(leaseInfo)

	// CHECK without the cached config fails.
	saved, _ := os.ReadFile(e.cacheFile(cs[0]))
	os.Remove(e.cacheFile(cs[0]))
	if err := e.check(list, cs[0]); cniCode(err) != types.ErrUnknownContainer {
		t.Errorf("CHECK without a cached config: %v, want code 3", err)
	}
	if err := os.WriteFile(e.cacheFile(cs[0]), saved, 0o600); err != nil {
		t.Fatal(err)
	}

	// DEL removes the interface, the reservation and the cache file.
	if err := e.del(list, cs[0]); err != nil {
		t.Fatalf("DEL: %v", err)
	}
	if l, _, _ := cs[0].link(t); l != nil {
		t.Error("eth0 still there after DEL")
	}
	if _, err := os.Stat(e.cacheFile(cs[0])); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("cache file after DEL: %v", err)
	}
	if _, ok := e.reservations()["c0"]; ok {
		t.Error("c0's address still reserved after DEL")
	}

	// DEL works from the cache after the subnet file is gone, and twice.
	if err := os.Remove(e.subnetFile); err != nil {
		t.Fatal(err)
	}
	for i := range 2 {
		if err := e.del(list, cs[1]); err != nil {
			t.Fatalf("DEL %d without the subnet file: %v", i+1, err)
		}
	}
	if l, _, _ := cs[1].link(t); l != nil {
		t.Error("eth0 still there after DEL")
	}
	if r := e.reservations(); len(r) != 1 || r["c2"] == "" {
		t.Errorf("reservations %v, want c2's only", r)
	}
	if err := e.del(list, cs[0]); err != nil {
		t.Errorf("DEL of a deleted container: %v", err)
	}
}

// TestVersions: ADD answers in the version of the network config.
func TestVersions(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	for _, v := range []string{"0.3.1", "0.4.0", "1.0.0", "1.1.0"} {
		list := e.conflist(v, "")
		c := e.newContainer("v" + strings.ReplaceAll(v, ".", ""))
		res, err := e.add(list, c)
		if err != nil {
			t.Fatalf("ADD %s: %v", v, err)
		}
		if res.Version() != v {
			t.Errorf("config %s: result version %s", v, res.Version())
		}
		r, err := types100.NewResultFromResult(res)
		if err != nil {
			t.Fatal(err)
		}
		if ip := containerIP(t, r); !leaseInfo.Subnet.Contains(ip.Addr()) {
			t.Errorf("config %s: address %s", v, ip)
		}
		if v != "0.3.1" {
			if err := e.check(list, c); err != nil {
				t.Errorf("CHECK %s: %v", v, err)
			}
		}
		if err := e.del(list, c); err != nil {
			t.Errorf("DEL %s: %v", v, err)
		}
		if _, err := os.Stat(e.cacheFile(c)); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("%s: cache file after DEL: %v", v, err)
		}
	}
	if r := e.reservations(); len(r) != 0 {
		t.Errorf("reservations left: %v", r)
	}
}

// TestDelWithoutCache: with the cached config lost, DEL builds the config
// from the subnet file and still releases the address.
func TestDelWithoutCache(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	list := e.conflist("1.0.0", "")
	c := e.newContainer("lost")
	e.mustAdd(list, c)
	if err := os.Remove(e.cacheFile(c)); err != nil {
		t.Fatal(err)
	}
	if err := e.del(list, c); err != nil {
		t.Fatalf("DEL: %v", err)
	}
	if r := e.reservations(); len(r) != 0 {
		t.Errorf("reservations left: %v", r)
	}
	if l, _, _ := c.link(t); l != nil {
		t.Error("eth0 still there after DEL")
	}
}

// TestAddFailureLeavesNothing: a failed ADD leaves no cache file, no
// interface and no reservation.
func TestAddFailureLeavesNothing(t *testing.T) {
	t.Parallel()
	e := newEnv(t)

	// A /30 lease has one address for containers: the second ADD fails in
	// host-local, after bridge has put eth0 into the container.
	small := leaseInfo
	small.Subnet = netip.MustParsePrefix("10.5.58.0/30")
	e.writeSubnetFile(small)
	list := e.conflist("1.1.0", "")
	a, b := e.newContainer("fits"), e.newContainer("nospace")
	e.mustAdd(list, a)
	if _, err := e.add(list, b); err == nil {
		t.Fatal("ADD in a full lease succeeded")
	}
	if _, err := os.Stat(e.cacheFile(b)); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("cache file of the failed ADD: %v", err)
	}
	if l, _, _ := b.link(t); l != nil {
		t.Error("the failed ADD left eth0 in the container")
	}
	if r := e.reservations(); len(r) != 1 || r["fits"] != "10.5.58.2" {
		t.Errorf("reservations %v, want fits=10.5.58.2 only", r)
	}

	// A delegate that is not in CNI_PATH: refused before anything is written.
	c := e.newContainer("nodelegate")
	_, err := e.add(e.conflist("1.1.0", `{"type":"no-such-plugin"}`), c)
	if cniCode(err) != types.ErrInvalidNetworkConfig || !strings.Contains(err.Error(), "no-such-plugin") {
		t.Errorf("ADD with a missing delegate: %v, want code 7 naming it", err)
	}
	if _, err := os.Stat(e.cacheFile(c)); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("cache file of the failed ADD: %v", err)
	}

	// No subnet file: try again later.
	os.Remove(e.subnetFile)
	_, err = e.add(list, c)
	if cniCode(err) != types.ErrTryAgainLater || !strings.Contains(err.Error(), e.subnetFile) {
		t.Errorf("ADD without the subnet file: %v, want code 11 naming the file", err)
	}
	if names, _ := (cache{dir: e.dataDir}).list(); len(names) != 1 {
		t.Errorf("cache files %v, want the first container's only", names)
	}
}

// TestGC: GC drops the cached configs and the reservations of attachments
// that are not in the valid list, and nothing of another network.
func TestGC(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	list := e.conflist("1.1.0", "")
	cs := []container{e.newContainer("keep"), e.newContainer("gone1"), e.newContainer("gone2")}
	for _, c := range cs {
		e.mustAdd(list, c)
	}
	other := filepath.Join(e.dataDir, "otherpod-eth0")
	if err := os.WriteFile(other, []byte(`{"name":"othernet","type":"bridge"}`), 0o600); err != nil {
		t.Fatal(err)
	}

	// A runtime that lost track of gone1 and gone2: libcni has no cached
	// attachment for them, so only the plugin's GC can clean up.
	fresh := libcni.NewCNIConfigWithCacheDir(e.cni.Path, t.TempDir(), nil)
	err := e.inHost(func(ctx context.Context) error {
		return fresh.GCNetworkList(ctx, list, &libcni.GCArgs{ValidAttachments: []types.GCAttachment{{ContainerID: "keep", IfName: "eth0"}}})
	})
	if err != nil {
		t.Fatalf("GC: %v", err)
	}
	names, err := (cache{dir: e.dataDir}).list()
	if err != nil || len(names) != 2 || names[0] != "keep-eth0" || names[1] != "otherpod-eth0" {
		t.Errorf("cache files after GC: %v %v, want keep-eth0 and otherpod-eth0", names, err)
	}
	if r := e.reservations(); len(r) != 1 || r["keep"] == "" {
		t.Errorf("reservations after GC: %v, want keep's only", r)
	}
	if err := e.check(list, cs[0]); err != nil {
		t.Errorf("CHECK of the kept container: %v", err)
	}

	// GC still works with the subnet file gone (the cached config names the
	// delegates) and with an empty list.
	os.Remove(e.subnetFile)
	err = e.inHost(func(ctx context.Context) error {
		return fresh.GCNetworkList(ctx, list, &libcni.GCArgs{ValidAttachments: []types.GCAttachment{}})
	})
	if err != nil {
		t.Fatalf("GC without the subnet file: %v", err)
	}
	if r := e.reservations(); len(r) != 0 {
		t.Errorf("reservations after GC of everything: %v", r)
	}
	if names, _ := (cache{dir: e.dataDir}).list(); len(names) != 1 || names[0] != "otherpod-eth0" {
		t.Errorf("cache files after GC of everything: %v", names)
	}
}

// TestStatus: ready only with a subnet file and an agent answering 200 on
// /readyz; not ready is code 50.
func TestStatus(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	list := e.conflist("1.1.0", "")

	if err := e.status(list); cniCode(err) != types.ErrPluginNotAvailable || !strings.Contains(err.Error(), "not serving") {
		t.Errorf("STATUS without the agent's socket: %v, want code 50", err)
	}
	serveReadyz(t, e.socket, 200)
	if err := e.status(list); err != nil {
		t.Errorf("STATUS with the agent serving: %v", err)
	}
	if err := e.status(e.conflist("1.1.0", `{"type":"no-such-plugin"}`)); cniCode(err) != types.ErrPluginNotAvailable || !strings.Contains(err.Error(), "no-such-plugin") {
		t.Errorf("STATUS with a missing delegate: %v, want code 50", err)
	}
	os.Remove(e.subnetFile)
	if err := e.status(list); cniCode(err) != types.ErrPluginNotAvailable || !strings.Contains(err.Error(), "subnet file") {
		t.Errorf("STATUS without the subnet file: %v, want code 50", err)
	}
	if err := os.WriteFile(e.subnetFile, []byte("FLANNEL_SUBNET=garbage\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := e.status(list); cniCode(err) != types.ErrPluginNotAvailable {
		t.Errorf("STATUS with a malformed subnet file: %v, want code 50", err)
	}
	e.writeSubnetFile(leaseInfo)

	// An agent that is up but not ready.
	e2 := newEnv(t)
	serveReadyz(t, e2.socket, 503)
	if err := e2.status(e2.conflist("1.1.0", "")); cniCode(err) != types.ErrPluginNotAvailable || !strings.Contains(err.Error(), "503") {
		t.Errorf("STATUS with the agent answering 503: %v, want code 50", err)
	}
}
