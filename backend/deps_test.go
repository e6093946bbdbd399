package backend_test

import (
	"os/exec"
	"strings"
	"testing"
)

// TestBackendsDoNotLinkEtcd keeps the backends free of the store: they take
// leases and the network config from package lease, and linking the etcd
// client (about 85 packages) into every backend and its tests is what that
// package exists to avoid.
func TestBackendsDoNotLinkEtcd(t *testing.T) {
	// go test puts its own GOROOT/bin first in PATH.
	out, err := exec.Command("go", "list", "-deps", "github.com/netagent/netagent/backend/...").Output()
	if err != nil {
		t.Fatalf("go list -deps: %v", err)
	}
	for _, pkg := range strings.Fields(string(out)) {
		if strings.HasPrefix(pkg, "go.etcd.io/") || pkg == "github.com/netagent/netagent/subnet" {
			t.Errorf("a backend package depends on %s (go list -deps ./backend/...)", pkg)
		}
	}
}
