package kubelab

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// Binaries are the paths of the programs an API server runs on.
type Binaries struct {
	Etcd, APIServer string
}

// BuildNotice says what the first Build on a machine costs, for a program
// to print before it calls Build.
const BuildNotice = "etcd and kube-apiserver come from scripts/kube-binaries.sh, cached per machine; " +
	"the first run on a fresh machine builds kube-apiserver: ~10 minutes of 2 cores and ~3 GB of memory"

// Build returns the binaries, built by scripts/kube-binaries.sh, which
// caches them outside the tree (keyed by version, under a lock) and
// returns at once when they are there. The script is looked for in each
// of dirs and their parents, in order. A cold build takes minutes: ctx
// bounds it.
func Build(ctx context.Context, dirs ...string) (Binaries, error) {
	script, err := FindScript(dirs...)
	if err != nil {
		return Binaries{}, err
	}
	var stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, script, "etcd", "kube-apiserver")
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return Binaries{}, fmt.Errorf("kubelab: %s: %w\n%s", script, err, stderr.Bytes())
	}
	paths := strings.Fields(string(out))
	if len(paths) != 2 {
		return Binaries{}, fmt.Errorf("kubelab: %s printed %q, want two paths", script, out)
	}
	return Binaries{Etcd: paths[0], APIServer: paths[1]}, nil
}

// FindScript returns the path of scripts/kube-binaries.sh in the first of
// dirs (or their parents) that holds it; with no dirs, the working
// directory's (a package of the module, as under go test).
func FindScript(dirs ...string) (string, error) {
	if len(dirs) == 0 {
		wd, err := os.Getwd()
		if err != nil {
			return "", fmt.Errorf("kubelab: %w", err)
		}
		dirs = []string{wd}
	}
	for _, dir := range dirs {
		for {
			p := filepath.Join(dir, "scripts", "kube-binaries.sh")
			if _, err := os.Stat(p); err == nil {
				return p, nil
			}
			parent := filepath.Dir(dir)
			if parent == dir {
				break
			}
			dir = parent
		}
	}
	return "", errors.New("kubelab: scripts/kube-binaries.sh not found above " + strings.Join(dirs, " or "))
}
