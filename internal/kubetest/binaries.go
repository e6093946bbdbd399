package kubetest

import (
	"context"
	"sync"
	"testing"

	"github.com/netagent/netagent/internal/lab/kubelab"
)

// Binaries are the paths of the programs a Cluster runs.
type Binaries = kubelab.Binaries

var (
	binOnce sync.Once
	bins    Binaries
	binErr  error
)

// Build returns the binaries a Cluster runs, built by
// scripts/kube-binaries.sh (kubelab.Build) on the first call of the test
// binary. The script caches them outside the tree, keyed by version, under
// a lock, so that every test package of a run (and later runs) shares one
// build; a cold build takes minutes. A failed build fails the test: it
// never skips.
func Build(t testing.TB) Binaries {
	t.Helper()
	binOnce.Do(func() { bins, binErr = kubelab.Build(context.Background()) })
	if binErr != nil {
		t.Fatalf("kubetest: %v", binErr)
	}
	return bins
}
