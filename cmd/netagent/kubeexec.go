package main

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"

	"github.com/netagent/netagent/agent"
)

// kubeBinary is the build of netagent with the Kubernetes store, installed
// next to netagent by the package.
const kubeBinary = "netagent-kube"

// errNoKubeBinary is kube mode in a build without the Kubernetes store when
// netagent-kube is not installed either.
var errNoKubeBinary = errors.New("kube mode (--kube-subnet-mgr) is run by " + kubeBinary +
	", the build of netagent with the Kubernetes client; it is installed with netagent's package next to netagent")

// runKubeBinary replaces this process with netagent-kube, with the same
// arguments and environment, when kube mode is asked of a build without the
// Kubernetes store (the package's netagent: a host on etcd then carries
// none of the Kubernetes client). The PID, the journal stream and the
// systemd unit stay the same. It returns only on failure, or nil when this
// build has the store itself.
func runKubeBinary(opts *agent.Options) error {
	if !opts.Kube.Enabled || agent.HasKubeDriver() {
		return nil
	}
	path, err := findKubeBinary()
	if err != nil {
		return err
	}
	argv := append([]string{path}, os.Args[1:]...)
	if err := syscall.Exec(path, argv, os.Environ()); err != nil {
		return fmt.Errorf("kube mode: running %s: %w", path, err)
	}
	return nil
}

// findKubeBinary looks for netagent-kube next to this executable, then on
// $PATH.
func findKubeBinary() (string, error) {
	var tried []string
	if self, err := os.Executable(); err == nil {
		p := filepath.Join(filepath.Dir(self), kubeBinary)
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
		tried = append(tried, p)
	}
	if p, err := exec.LookPath(kubeBinary); err == nil {
		return p, nil
	}
	tried = append(tried, "$PATH")
	return "", fmt.Errorf("%w (looked in %v)", errNoKubeBinary, tried)
}
