package test

import (
	"encoding/json"
	"io/fs"
	"net/netip"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/netagent/netagent/internal/lab"
)

// TestPodman: podman 4.3 with its CNI backend and netagent-cni in a
// conflist runs a container on each of two hosts; they reach each other,
// `podman network reload` re-attaches a container whose link was lost,
// and `podman rm` releases the container's address in host-local's
// store. Timings are logged as figures.
func TestPodman(t *testing.T) {
	t.Parallel()
	requirePrograms(t, "podman", "/usr/bin/podman")
	requirePrograms(t, "runc", lab.PodmanRuntime)
	c, infos := newRuntimeCluster(t, 2, vxlanConfig)
	rctx := runtimeContext(t, c)
	pluginDir := filepath.Dir(binaries(t)["./cni-plugin/netagent-cni"])

	engines := map[string]*lab.Podman{}
	var ctns []*container
	for _, h := range c.hosts() {
		p, err := c.lab.NewPodman(rctx, h, []string{pluginDir}, podmanConflist(t, h))
		if err != nil {
			t.Fatal(err)
		}
		engines[h.Name] = p
		start := time.Now()
		lc, err := p.Run(rctx, "p1")
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("figure: podman run on %s: %v", h.Name, time.Since(start).Round(time.Millisecond))
		if !infos[h.Name].Subnet.Contains(lc.Addr.Addr()) {
			t.Errorf("%s: podman container has %s, outside the lease %s", h.Name, lc.Addr, infos[h.Name].Subnet)
		}
		ctns = append(ctns, &container{Container: lc, IP: lc.Addr.Addr(), IP4: lc.Addr.Addr()})
		// libcni's cache of the result is the host's own.
		if n := len(fileNames(t, filepath.Join(p.Dir, "cni-cache", "results"))); n != 1 {
			t.Errorf("%s: %d CNI results in the host's own cache, want 1 (its container's)", h.Name, n)
		}
	}
	c.pingMatrix(ctns)
	if t.Failed() {
		t.FailNow()
	}

	// Reload: the container's link is gone (as after a host's network
	// was flushed); `podman network reload` runs the plugins again.
	h2, p2 := c.hosts()[1], ctns[1]
	c.mustExec(p2.NS, "ip", "link", "del", "eth0")
	if err := c.ping(ctns[0].NS, p2.IP, lab.PingOptions{Count: 1}); err == nil {
		t.Fatalf("%s reaches %s with its eth0 deleted", ctns[0].NS, p2.IP)
	}
	start := time.Now()
	if out, err := engines[h2.Name].Command(rctx, "network", "reload", p2.Name); err != nil {
		t.Fatalf("podman network reload: %v: %s", err, out)
	}
	t.Logf("figure: podman network reload on %s: %v", h2.Name, time.Since(start).Round(time.Millisecond))
	if out := c.mustExec(p2.NS, "ip", "-o", "-4", "addr", "show", "dev", "eth0"); !containsField(out, p2.Container.Addr.String()) {
		t.Errorf("after the reload, %s's eth0 is %q, want %s again", p2.NS, out, p2.Container.Addr)
	}
	c.pingMatrix(ctns)

	// Removal releases the address in host-local's store.
	h1, p1 := c.hosts()[0], ctns[0]
	ipam := filepath.Join(h1.Dir, "ipam")
	if !hasIPAMFile(t, ipam, p1.IP) {
		t.Fatalf("host-local's store %s has no file for %s while the container runs", ipam, p1.IP)
	}
	start = time.Now()
	if err := engines[h1.Name].Remove(rctx, p1.Container); err != nil {
		t.Fatal(err)
	}
	t.Logf("figure: podman rm on %s: %v", h1.Name, time.Since(start).Round(time.Millisecond))
	if hasIPAMFile(t, ipam, p1.IP) {
		t.Errorf("host-local's store %s still holds %s after podman rm", ipam, p1.IP)
	}
	if n := len(fileNames(t, filepath.Join(engines[h1.Name].Dir, "cni-cache", "results"))); n != 0 {
		t.Errorf("%s: %d CNI results left in the host's cache after podman rm", h1.Name, n)
	}
}

// fileNames returns the names of the files (not directories) under dir.
func fileNames(t *testing.T, dir string) []string {
	t.Helper()
	var names []string
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() {
			names = append(names, d.Name())
		}
		return nil
	})
	if err != nil {
		t.Fatalf("%s: %v", dir, err)
	}
	return names
}

// podmanConflist is cniConf for podman 4.3, whose libcni knows CNI
// versions up to 1.0.0 (netagent-cni also speaks 1.1.0, which the
// conflist the package ships names).
func podmanConflist(t *testing.T, h *lab.Host) []byte {
	t.Helper()
	var list map[string]any
	if err := json.Unmarshal([]byte(cniConf(h)), &list); err != nil {
		t.Fatal(err)
	}
	list["cniVersion"] = "1.0.0"
	b, err := json.Marshal(list)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// hasIPAMFile reports whether host-local's store under dir holds the
// reservation file of ip (named by the address).
func hasIPAMFile(t *testing.T, dir string, ip netip.Addr) bool {
	t.Helper()
	return slices.Contains(fileNames(t, dir), ip.String())
}

// containsField reports whether the whitespace-separated text s has the
// field f.
func containsField(s, f string) bool {
	return slices.Contains(strings.Fields(s), f)
}
