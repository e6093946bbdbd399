package kubestore

import (
	"os/exec"
	"strings"
	"testing"
)

// TestNoTypedClientset keeps client-go's typed clientset out of the Store
// (and so out of the agent): its packages import client-go's scheme of
// every API group, whose registration adds ~100 ms to the agent's start
// and more than doubles its binary and memory. The Store uses the REST
// client on a scheme of its own (client.go).
func TestNoTypedClientset(t *testing.T) {
	// go test puts its own GOROOT/bin first in PATH.
	out, err := exec.Command("go", "list", "-deps", "github.com/netagent/netagent/subnet/kubestore").Output()
	if err != nil {
		t.Fatalf("go list -deps: %v", err)
	}
	for _, pkg := range strings.Fields(string(out)) {
		if pkg == "k8s.io/client-go/kubernetes" || strings.HasPrefix(pkg, "k8s.io/client-go/kubernetes/") {
			t.Errorf("subnet/kubestore depends on %s (go list -deps): use the REST client of client.go", pkg)
		}
	}
}
