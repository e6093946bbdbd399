package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// goBuild builds this command into dir/name with the build tags given.
func goBuild(t *testing.T, dir, name, tags string) string {
	t.Helper()
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("go command not found: %v", err)
	}
	bin := filepath.Join(dir, name)
	build := exec.Command(goBin, "build", "-tags", tags, "-o", bin, ".")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build -tags %s: %v\n%s", tags, err, out)
	}
	return bin
}

// TestNoKubeBuildHasNoKubernetesClient: the package's netagent (built
// with netagent_nokube) links nothing of k8s.io, so that hosts on etcd do
// not pay for the Kubernetes client; the default build has the store.
func TestNoKubeBuildHasNoKubernetesClient(t *testing.T) {
	deps := func(tags string) []string {
		out, err := exec.Command("go", "list", "-deps", "-tags", tags, ".").Output()
		if err != nil {
			t.Fatalf("go list -deps -tags %s: %v", tags, err)
		}
		var k8s []string
		for _, p := range strings.Fields(string(out)) {
			if strings.HasPrefix(p, "k8s.io/") || strings.HasPrefix(p, "sigs.k8s.io/") {
				k8s = append(k8s, p)
			}
		}
		return k8s
	}
	if k := deps("grpcnotrace,netagent_nokube"); len(k) > 0 {
		t.Errorf("the netagent_nokube build links %d Kubernetes packages, e.g. %v", len(k), k[:min(5, len(k))])
	}
	if k := deps("grpcnotrace"); !strings.Contains(strings.Join(k, " "), "k8s.io/client-go/rest") {
		t.Errorf("the default build does not link the Kubernetes client: %v", k)
	}
}

// TestKubeModeRunsKubeBinary: `netagent run --kube-subnet-mgr` in a build
// without the store says netagent-kube is missing, and with netagent-kube
// next to it becomes netagent-kube (its own checks answer: a prefix only
// the Kubernetes store validates is refused, naming the flag). Both runs
// end in the flags' validation, before the agent starts; they run in a
// network namespace of their own all the same.
func TestKubeModeRunsKubeBinary(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the command twice: not in -short")
	}
	if os.Geteuid() != 0 {
		t.Skip("needs root for a network namespace of its own (unshare --net)")
	}
	dir := t.TempDir()
	lean := goBuild(t, dir, "netagent", "netagent_nokube")
	runLean := func(args ...string) (string, int) {
		cmd := exec.Command("unshare", append([]string{"--net", lean, "run", "--kube-subnet-mgr",
			"--node-name", "n1", "--net-config-path", filepath.Join(dir, "net-conf.json")}, args...)...)
		cmd.Env = []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin"}
		out, err := cmd.CombinedOutput()
		code := 0
		if ee, ok := err.(*exec.ExitError); ok {
			code = ee.ExitCode()
		} else if err != nil {
			t.Fatal(err)
		}
		return string(out), code
	}

	out, code := runLean()
	if code != 1 || !strings.Contains(out, "netagent-kube") || !strings.Contains(out, filepath.Join(dir, "netagent-kube")) {
		t.Fatalf("kube mode without netagent-kube: exit %d, output\n%s\nwant exit 1 naming %s", code, out, filepath.Join(dir, "netagent-kube"))
	}

	goBuild(t, dir, "netagent-kube", "")
	out, code = runLean("--kube-annotation-prefix", "not a prefix!")
	if code != 2 || !strings.Contains(out, "--kube-annotation-prefix") {
		t.Fatalf("kube mode with netagent-kube and a bad prefix: exit %d, output\n%s\nwant exit 2 naming --kube-annotation-prefix", code, out)
	}
}
