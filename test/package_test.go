package test

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// The packages of scripts/package.sh, installed into a throwaway root:
// never into the machine's own.

var (
	packageOnce sync.Once
	packageDebs []string
	packageErr  error
	packageOut  []byte
)

// buildPackages runs scripts/package.sh once per test binary and returns
// the files it made (a .deb and an .rpm).
func buildPackages(t *testing.T) []string {
	t.Helper()
	if _, err := exec.LookPath("dpkg-deb"); err != nil {
		t.Skip("dpkg-deb is not installed: the package tests run on Debian")
	}
	packageOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
		defer cancel()
		dir := filepath.Join(binDir, "packages")
		cmd := exec.CommandContext(ctx, "../scripts/package.sh", dir)
		packageOut, packageErr = cmd.Output()
		if ee, ok := packageErr.(*exec.ExitError); ok {
			packageOut = append(packageOut, ee.Stderr...)
		}
		packageDebs = strings.Fields(string(packageOut))
	})
	if packageErr != nil {
		t.Fatalf("scripts/package.sh: %v\n%s", packageErr, packageOut)
	}
	return packageDebs
}

func packageFile(t *testing.T, ext string) string {
	t.Helper()
	for _, f := range buildPackages(t) {
		if strings.HasSuffix(f, ext) {
			return f
		}
	}
	t.Fatalf("scripts/package.sh made no %s: %q", ext, packageDebs)
	return ""
}

// debField is a control field of the .deb.
func debField(t *testing.T, deb, field string) string {
	t.Helper()
	out, err := exec.Command("dpkg-deb", "-f", deb, field).Output()
	if err != nil {
		t.Fatalf("dpkg-deb -f %s: %v", field, err)
	}
	return strings.TrimSpace(string(out))
}

// TestDebInstall: the .deb unpacks into a throwaway root with every file
// where the README says, the sysconfig file as a conffile, a unit that
// systemd-analyze verifies there, and a binary that reports the package's
// version and runs the agent in the lab.
func TestDebInstall(t *testing.T) {
	requireRoot(t)
	deb := packageFile(t, ".deb")
	root := t.TempDir()
	if out, err := exec.Command("dpkg-deb", "-x", deb, root).CombinedOutput(); err != nil {
		t.Fatalf("dpkg-deb -x: %v\n%s", err, out)
	}

	files := []struct {
		path string
		mode os.FileMode
		same string // the tree's file it must equal, if any
	}{
		{"usr/bin/netagent", 0o755, ""},
		{"usr/bin/netagent-kube", 0o755, ""},
		{"opt/cni/bin/netagent-cni", 0o755, ""},
		{"usr/lib/systemd/system/netagent.service", 0o644, "dist/netagent.service"},
		{"etc/default/netagent", 0o644, "dist/netagent.sysconfig"},
		{"usr/share/doc/netagent/examples/docker.service.d/10-netagent.conf", 0o644, "dist/docker.service.d/10-netagent.conf"},
		{"usr/share/doc/netagent/examples/10-netagent.conflist", 0o644, "dist/10-netagent.conflist"},
		{"usr/share/doc/netagent/README.md", 0o644, "README.md"},
		{"usr/share/doc/netagent/README.cni-plugin.md", 0o644, "cni-plugin/README.md"},
		{"usr/share/doc/netagent/compatibility.md", 0o644, "docs/compatibility.md"},
		{"usr/share/doc/netagent/migrating-from-flannel.md", 0o644, "docs/migrating-from-flannel.md"},
		{"usr/share/doc/netagent/reliability.md", 0o644, "docs/reliability.md"},
		{"usr/share/doc/netagent/copyright", 0o644, ""},
		{"usr/share/doc/netagent/changelog.gz", 0o644, ""},
	}
	for _, f := range files {
		fi, err := os.Stat(filepath.Join(root, f.path))
		if err != nil {
			t.Errorf("package lacks /%s: %v", f.path, err)
			continue
		}
		if fi.Mode().Perm() != f.mode || !fi.Mode().IsRegular() {
			t.Errorf("/%s has mode %v, want a regular file of %v", f.path, fi.Mode(), f.mode)
		}
		if f.same != "" {
			got, _ := os.ReadFile(filepath.Join(root, f.path))
			want, err := os.ReadFile(filepath.Join("..", f.same))
			if err != nil {
				t.Fatal(err)
			}
			if string(got) != string(want) {
				t.Errorf("/%s differs from the tree's %s", f.path, f.same)
			}
		}
	}
	// Nothing else but directories and the lintian overrides.
	known := map[string]bool{"usr/share/lintian/overrides/netagent": true}
	for _, f := range files {
		known[f.path] = true
	}
	filepath.Walk(root, func(p string, fi os.FileInfo, err error) error {
		if err != nil || fi.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		if !known[rel] {
			t.Errorf("package holds an unexpected file /%s", rel)
		}
		return nil
	})

	ctl := t.TempDir()
	if out, err := exec.Command("dpkg-deb", "-e", deb, ctl).CombinedOutput(); err != nil {
		t.Fatalf("dpkg-deb -e: %v\n%s", err, out)
	}
	conffiles, _ := os.ReadFile(filepath.Join(ctl, "conffiles"))
	if strings.TrimSpace(string(conffiles)) != "/etc/default/netagent" {
		t.Errorf("conffiles = %q, want /etc/default/netagent", conffiles)
	}

	// The installed binaries report the package's version.
	version := debField(t, deb, "Version")
	for _, bin := range []string{"netagent", "netagent-kube"} {
		out, err := exec.Command(filepath.Join(root, "usr/bin", bin), "version").Output()
		if err != nil {
			t.Fatalf("installed %s version: %v", bin, err)
		}
		if !strings.HasPrefix(string(out), "netagent "+version+"\n") || strings.Contains(string(out), "commit:  unknown") {
			t.Errorf("installed %s version printed\n%s\nwant version %s and a commit", bin, out, version)
		}
	}

	t.Run("systemd-analyze verify", func(t *testing.T) {
		sa, err := exec.LookPath("systemd-analyze")
		if err != nil {
			t.Fatal("systemd-analyze is not installed (scripts/deps.sh installs systemd)")
		}
		// The installed unit, with ExecStart= pointed at the installed
		// binary (verify requires it to exist), next to the host's units.
		unit, err := os.ReadFile(filepath.Join(root, "usr/lib/systemd/system/netagent.service"))
		if err != nil {
			t.Fatal(err)
		}
		dir := t.TempDir()
		text := strings.ReplaceAll(string(unit), "/usr/bin/netagent", filepath.Join(root, "usr/bin/netagent"))
		if err := os.WriteFile(filepath.Join(dir, "netagent.service"), []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command(sa, "verify", filepath.Join(dir, "netagent.service"))
		cmd.Env = append(os.Environ(), "SYSTEMD_UNIT_PATH="+dir+":")
		out, err := cmd.CombinedOutput()
		// verify also reports problems of unrelated units of the host.
		for _, line := range strings.Split(string(out), "\n") {
			if strings.Contains(line, dir) || strings.HasPrefix(line, "netagent") {
				t.Errorf("systemd-analyze verify: %s", line)
			}
		}
		if err != nil {
			t.Logf("systemd-analyze verify exited %v:\n%s", err, out)
		}
	})

	t.Run("lintian", func(t *testing.T) {
		if _, err := exec.LookPath("lintian"); err != nil {
			t.Fatal("lintian is not installed (scripts/deps.sh installs it)")
		}
		start := time.Now()
		out, err := exec.Command("lintian", "--allow-root", "--fail-on", "error", deb).CombinedOutput()
		t.Logf("lintian (%v):\n%s", time.Since(start).Round(time.Second), out)
		if err != nil {
			t.Errorf("lintian: %v", err)
		}
		for _, line := range strings.Split(string(out), "\n") {
			if strings.HasPrefix(line, "E: ") {
				t.Errorf("lintian error: %s", line)
			}
		}
	})

	t.Run("the installed agent in the lab", func(t *testing.T) {
		c := newCluster(t, clusterOptions{Hosts: 2, Config: vxlanConfig})
		for _, h := range c.hosts() {
			args := c.agentArgs(h)
			args[0] = filepath.Join(root, "usr/bin/netagent")
			p, err := c.lab.StartProcess(h.NS, nil, args...)
			if err != nil {
				t.Fatal(err)
			}
			c.mu.Lock()
			c.agents[h.Name] = p
			c.mu.Unlock()
		}
		c.awaitReady()
		h1, h2 := c.hosts()[0], c.hosts()[1]
		a, b := c.addContainer(h1), c.addContainer(h2)
		c.pingMatrix([]*container{a, b})
	})
}

// TestRPMBuilt: the .rpm is made with the same version (there is no rpm
// on Debian to unpack it with).
func TestRPMBuilt(t *testing.T) {
	requireRoot(t)
	rpm := packageFile(t, ".rpm")
	deb := packageFile(t, ".deb")
	fi, err := os.Stat(rpm)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Size() < 1<<20 {
		t.Errorf("%s is %d bytes: too small to hold the binaries", rpm, fi.Size())
	}
	if v := debField(t, deb, "Version"); !strings.Contains(filepath.Base(rpm), v) {
		t.Errorf("%s does not carry the version %s", rpm, v)
	}
}
