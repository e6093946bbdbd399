package kubetest

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// Binaries are the paths of the programs a Cluster runs.
type Binaries struct {
	Etcd, APIServer string
}

var (
	binOnce sync.Once
	bins    Binaries
	binErr  error
)

// Build returns the binaries a Cluster runs, building them with
// scripts/kube-binaries.sh on the first call of the test binary. The
// script caches them outside the tree, keyed by version, under a lock, so
// that every test package of a run (and later runs) shares one build; a
// cold build takes minutes. A failed build fails the test: it never skips.
func Build(t testing.TB) Binaries {
	t.Helper()
	binOnce.Do(func() { bins, binErr = build() })
	if binErr != nil {
		t.Fatalf("kubetest: %v", binErr)
	}
	return bins
}

func build() (Binaries, error) {
	script, err := findScript()
	if err != nil {
		return Binaries{}, err
	}
	var stderr bytes.Buffer
	cmd := exec.Command(script, "etcd", "kube-apiserver")
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return Binaries{}, fmt.Errorf("%s: %w\n%s", script, err, stderr.Bytes())
	}
	paths := strings.Fields(string(out))
	if len(paths) != 2 {
		return Binaries{}, fmt.Errorf("%s printed %q, want two paths", script, out)
	}
	return Binaries{Etcd: paths[0], APIServer: paths[1]}, nil
}

// findScript finds scripts/kube-binaries.sh in the working directory (a
// package of the module, as under go test) or one of its parents.
func findScript() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		p := filepath.Join(dir, "scripts", "kube-binaries.sh")
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("scripts/kube-binaries.sh not found above the working directory")
		}
		dir = parent
	}
}
