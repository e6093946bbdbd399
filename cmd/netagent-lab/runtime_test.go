package main

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestUpOnceRuntime brings a lab up and down with each container
// runtime: every container reaches every other and nothing is left (the
// runtimes' containers, mounts and cgroups go with the lab).
func TestUpOnceRuntime(t *testing.T) {
	requireRoot(t)
	labBinary(t)
	for _, tt := range []struct{ runtime, pkg, program string }{
		{runtimeDocker, "docker.io", "/usr/sbin/dockerd"},
		{runtimePodman, "podman", "/usr/bin/podman"},
	} {
		t.Run(tt.runtime, func(t *testing.T) {
			for _, p := range []string{tt.program, "/bin/busybox"} {
				if _, err := exec.LookPath(p); err != nil {
					t.Skipf("%s is not installed (%v): scripts/deps.sh installs %s and busybox-static", p, err, tt.pkg)
				}
			}
			dir := filepath.Join(t.TempDir(), "lab")
			before := rootLinks(t)
			start := time.Now()
			// The deadline only bounds a hang: the lab's own --timeout
			// (5 minutes with a runtime) ends a slow start first.
			out, err := runLab(t, 10*time.Minute, "up", "--once", "--runtime", tt.runtime, "--hosts", "2", "--dir", dir)
			t.Logf("up --once --runtime %s took %v", tt.runtime, time.Since(start).Round(time.Millisecond))
			if err != nil {
				t.Fatalf("up --once --runtime %s: %v\n%s", tt.runtime, err, out)
			}
			m := prefixRE.FindStringSubmatch(out)
			if m == nil {
				t.Fatalf("no namespace prefix in the output:\n%s", out)
			}
			if !strings.Contains(out, "containers run by "+tt.runtime) {
				t.Errorf("no line saying the containers were run by %s:\n%s", tt.runtime, out)
			}
			assertFullMatrix(t, out, ipv4, 4)
			assertGone(t, m[1], dir, before)
			if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("lab directory %s left behind: %v", dir, err)
			}
		})
	}
}
