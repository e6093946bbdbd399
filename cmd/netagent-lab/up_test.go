package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/netagent/netagent/internal/await"
	"github.com/netagent/netagent/internal/lab"
)

var (
	buildOnce sync.Once
	binDir    string
	buildErr  error
)

func TestMain(m *testing.M) {
	code := m.Run()
	if binDir != "" {
		os.RemoveAll(binDir)
	}
	os.Exit(code)
}

// labBinary builds netagent-lab and everything `up` runs into one
// directory, once per test binary, and returns netagent-lab's path.
func labBinary(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		if binDir, buildErr = os.MkdirTemp("", "netagent-lab-bin"); buildErr != nil {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
		defer cancel()
		_, buildErr = lab.BuildBinaries(ctx, binDir,
			"./cmd/netagent", "./cmd/netagent-lab", "./cni-plugin/netagent-cni",
			"github.com/containernetworking/plugins/plugins/main/bridge",
			"github.com/containernetworking/plugins/plugins/ipam/host-local",
			"github.com/containernetworking/plugins/plugins/meta/portmap")
	})
	if buildErr != nil {
		t.Fatalf("build: %v", buildErr)
	}
	return filepath.Join(binDir, "netagent-lab")
}

func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("the lab needs root: it creates network namespaces")
	}
}

// rootLinks lists the link names of the initial namespace (read only).
//
// Equivalent to: `ip -o link show`.
func rootLinks(t *testing.T) []string {
	t.Helper()
	out, err := exec.Command("ip", "-o", "link", "show").Output()
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, line := range strings.Split(string(out), "\n") {
		if f := strings.Fields(line); len(f) > 1 {
			names = append(names, strings.TrimSuffix(f[1], ":"))
		}
	}
	slices.Sort(names)
	return names
}

// runLab runs the netagent-lab binary and returns its combined output and
// exit error.
func runLab(t *testing.T, timeout time.Duration, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), timeout)
	defer cancel()
	out, err := exec.CommandContext(ctx, labBinary(t), args...).CombinedOutput()
	return string(out), err
}

var prefixRE = regexp.MustCompile(`prefix (na[a-z0-9]{4}),`)

// assertGone checks that nothing of the lab with the given prefix and
// directory is left: no namespace, no live process whose command line
// names the directory, no new link in the initial namespace.
func assertGone(t *testing.T, prefix, dir string, linksBefore []string) {
	t.Helper()
	nss, err := lab.ListNamespaces(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, ns := range nss {
		if strings.HasPrefix(ns, prefix+"-") {
			t.Errorf("namespace %s left behind", ns)
		}
	}
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range procs {
		b, err := os.ReadFile(p)
		if err != nil || !bytes.Contains(b, []byte(dir)) {
			continue
		}
		stat, _ := os.ReadFile(filepath.Join(filepath.Dir(p), "stat"))
		if i := bytes.LastIndexByte(stat, ')'); i > 0 && i+2 < len(stat) && stat[i+2] == 'Z' {
			continue // exited, awaiting its parent
		}
		t.Errorf("process left behind: %s: %s", p, bytes.ReplaceAll(b, []byte{0}, []byte{' '}))
	}
	if after := rootLinks(t); !slices.Equal(after, linksBefore) {
		t.Errorf("links of the initial namespace changed:\nbefore %v\nafter  %v", linksBefore, after)
	}
}

// matrixCells returns the cells of the ping matrix of family f printed
// in out, by row.
func matrixCells(t *testing.T, out string, f family) map[string][]string {
	t.Helper()
	_, after, ok := strings.Cut(out, string(f)+" ping matrix (row: from, column: to):\n")
	if !ok {
		t.Fatalf("no %s ping matrix in the output:\n%s", f, out)
	}
	lines := strings.Split(after, "\n")
	header := strings.Fields(lines[0])
	rows := map[string][]string{}
	for _, line := range lines[1 : 1+len(header)] {
		f := strings.Fields(line)
		if len(f) != len(header)+1 {
			t.Fatalf("matrix row %q: want %d cells", line, len(header))
		}
		rows[f[0]] = f[1:]
	}
	return rows
}

// assertFullMatrix checks a matrix of family f of n containers in which
// every container reached every other one.
func assertFullMatrix(t *testing.T, out string, f family, n int) {
	t.Helper()
	rows := matrixCells(t, out, f)
	if len(rows) != n {
		t.Fatalf("matrix has %d rows, want %d:\n%s", len(rows), n, out)
	}
	ok := 0
	for from, cells := range rows {
		for _, c := range cells {
			switch c {
			case "ok":
				ok++
			case ".":
			default:
				t.Errorf("%s: cell %q", from, c)
			}
		}
	}
	if ok != n*(n-1) {
		t.Errorf("%d cells ok, want %d", ok, n*(n-1))
	}
	if want := fmt.Sprintf("%s: %d/%d pings ok: all ok", f, n*(n-1), n*(n-1)); !strings.Contains(out, want) {
		t.Errorf("output lacks %q", want)
	}
}

// TestUpOnce brings the default lab up and down on each store: every
// container reaches every other, every host's status is printed, and
// nothing is left.
func TestUpOnce(t *testing.T) {
	requireRoot(t)
	labBinary(t)
	for _, store := range []string{storeEtcd, storeKube} {
		t.Run(store, func(t *testing.T) { testUpOnce(t, store) })
	}
}

func testUpOnce(t *testing.T, store string) {
	dir := filepath.Join(t.TempDir(), "lab")
	before := rootLinks(t)
	start := time.Now()
	// A cold build of kube-apiserver (scripts/kube-binaries.sh) takes
	// about ten minutes: the limit only bounds a hang.
	out, err := runLab(t, 20*time.Minute, "up", "--once", "--store", store, "--hosts", "3", "--dir", dir)
	t.Logf("up --once --store %s took %v", store, time.Since(start).Round(time.Millisecond))
	if err != nil {
		t.Fatalf("up --once: %v\n%s", err, out)
	}
	m := prefixRE.FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("no namespace prefix in the output:\n%s", out)
	}
	if want := ", store " + store + ","; !strings.Contains(out, want) {
		t.Errorf("output lacks %q", want)
	}
	if store == storeKube && !strings.Contains(out, "kube-apiserver up at https://192.168.77.2:6443") {
		t.Errorf("output does not say where the API server is:\n%s", out)
	}
	assertFullMatrix(t, out, ipv4, 6)
	if strings.Contains(out, "IPv6 ping matrix") {
		t.Error("an IPv4-only lab printed an IPv6 ping matrix")
	}
	for _, h := range []string{"h1", "h2", "h3"} {
		if !strings.Contains(out, "=== "+h+" (namespace "+m[1]+"-"+h) {
			t.Errorf("no status of %s", h)
		}
	}
	if n := strings.Count(out, "\nlease: "); n != 3 {
		t.Errorf("%d statuses with a lease, want 3:\n%s", n, out)
	}
	if n := strings.Count(out, "  vxlan  ok\n"); n != 6 {
		t.Errorf("%d programmed vxlan peers in the statuses, want 6", n)
	}
	assertGone(t, m[1], dir, before)
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("lab directory %s left behind: %v", dir, err)
	}
}

// TestUpExecStatusDown runs a lab in the background and acts on it with
// exec, status and down from other invocations.
func TestUpExecStatusDown(t *testing.T) {
	requireRoot(t)
	bin := labBinary(t)
	dir := filepath.Join(t.TempDir(), "lab")
	before := rootLinks(t)

	var upOut bytes.Buffer
	upCmd := exec.Command(bin, "up", "--wait", "--dir", dir)
	upCmd.Stdout, upCmd.Stderr = &upOut, &upOut
	start := time.Now()
	if err := upCmd.Start(); err != nil {
		t.Fatal(err)
	}
	upDone := make(chan error, 1)
	go func() { upDone <- upCmd.Wait() }()
	t.Cleanup(func() { // if the test fails before down
		if upCmd.ProcessState == nil {
			upCmd.Process.Signal(syscall.SIGTERM)
			<-upDone
		}
	})

	var s *labState
	await.Eventually(t, 2*time.Minute, "the lab ready", func() error {
		select {
		case err := <-upDone:
			t.Fatalf("up exited: %v\n%s", err, upOut.String())
		default:
		}
		st, err := readState(dir)
		if err != nil {
			return err
		}
		if !st.Ready {
			return errors.New("state not ready")
		}
		s = st
		return nil
	})
	t.Logf("lab ready in %v", time.Since(start).Round(time.Millisecond))
	if s.PID != upCmd.Process.Pid || len(s.Hosts) != 3 || len(s.Containers) != 6 {
		t.Fatalf("state: pid %d (up is %d), %d hosts, %d containers", s.PID, upCmd.Process.Pid, len(s.Hosts), len(s.Containers))
	}

	out, err := runLab(t, 20*time.Second, "exec", "--dir", dir, "h1", "--", "ip", "-o", "addr")
	if err != nil || !strings.Contains(out, " eth0    inet 192.168.77.11/24") || !strings.Contains(out, "flannel.1") || !strings.Contains(out, "cni0") {
		t.Errorf("exec h1 -- ip -o addr: %v\n%s", err, out)
	}
	out, err = runLab(t, 20*time.Second, "exec", "--dir", dir, "h1-c1", "--", "ip", "route")
	if err != nil || !strings.Contains(out, "10.5.0.0/16 via ") || !strings.Contains(out, "default via ") {
		t.Errorf("exec h1-c1 -- ip route: %v\n%s", err, out)
	}
	if out, err = runLab(t, 20*time.Second, "exec", "--dir", dir, "h2", "--", "sh", "-c", "exit 7"); exitCode(err) != 7 {
		t.Errorf("exec h2 -- sh -c 'exit 7': %v, want exit status 7\n%s", err, out)
	}

	t.Run("exec refuses names outside the lab", func(t *testing.T) {
		for _, name := range []string{"h9", "h1-c9", "default", "1", "/proc/1/ns/net", "../" + s.Prefix + "-h1"} {
			out, err := runLab(t, 20*time.Second, "exec", "--dir", dir, name, "--", "true")
			if exitCode(err) != 1 || !strings.Contains(out, "is not a namespace of the lab") {
				t.Errorf("exec %s: %v, want refused\n%s", name, err, out)
			}
		}
	})

	out, err = runLab(t, 60*time.Second, "status", "--dir", dir)
	if err != nil {
		t.Errorf("status: %v\n%s", err, out)
	}
	if want := "store etcd (http://192.168.77.2:2379)"; !strings.Contains(out, want) {
		t.Errorf("status lacks %q:\n%s", want, out)
	}
	assertFullMatrix(t, out, ipv4, 6)
	if n := strings.Count(out, "\nlease: "); n != 3 {
		t.Errorf("status: %d statuses with a lease, want 3", n)
	}

	start = time.Now()
	out, err = runLab(t, 60*time.Second, "down", "--dir", dir)
	if err != nil {
		t.Fatalf("down: %v\n%s", err, out)
	}
	t.Logf("down took %v", time.Since(start).Round(time.Millisecond))
	if err := <-upDone; err != nil {
		t.Errorf("up exited with %v\n%s", err, upOut.String())
	}
	if !strings.Contains(upOut.String(), "lab "+s.Prefix+" removed") {
		t.Errorf("up did not report its teardown:\n%s", upOut.String())
	}
	assertGone(t, s.Prefix, dir, before)

	if out, err := runLab(t, 20*time.Second, "exec", "--dir", dir, "h1", "--", "true"); err == nil || !strings.Contains(out, "no lab in") {
		t.Errorf("exec after down: %v\n%s", err, out)
	}
}

// TestDownAfterCrash: a lab whose `up` process was killed leaves its
// namespaces; down removes them.
func TestDownAfterCrash(t *testing.T) {
	requireRoot(t)
	dir := filepath.Join(t.TempDir(), "lab")
	before := rootLinks(t)
	out, err := runLab(t, 60*time.Second, "up", "--detach", "--hosts", "1", "--containers-per-host", "1", "--dir", dir)
	if err != nil {
		t.Fatalf("up --detach: %v\n%s", err, out)
	}
	s, err := readState(dir)
	if err != nil || !s.Ready {
		t.Fatalf("state after up --detach: %+v, %v", s, err)
	}
	if err := syscall.Kill(s.PID, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	if err := await.Poll(ctx, pollInterval, func() error {
		if upAlive(s.PID) {
			return errors.New("still alive")
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	nss, _ := lab.ListNamespaces(t.Context())
	left := 0
	for _, ns := range nss {
		if strings.HasPrefix(ns, s.Prefix+"-") {
			left++
		}
	}
	if left != len(s.Namespaces) {
		t.Errorf("%d namespaces after the crash, want all %d still there", left, len(s.Namespaces))
	}
	if out, err := runLab(t, 20*time.Second, "status", "--dir", dir); err == nil || !strings.Contains(out, "is not running") {
		t.Errorf("status of a crashed lab: %v\n%s", err, out)
	}
	out, err = runLab(t, 60*time.Second, "down", "--dir", dir)
	if err != nil || !strings.Contains(out, "removing its leftovers") {
		t.Errorf("down: %v\n%s", err, out)
	}
	assertGone(t, s.Prefix, dir, before)
}

// exitCode is the exit status in err from exec, 0 for nil, -1 otherwise.
func exitCode(err error) int {
	var x *exec.ExitError
	if errors.As(err, &x) {
		return x.ExitCode()
	}
	if err == nil {
		return 0
	}
	return -1
}

// TestUpArguments checks what `up` refuses before touching anything.
func TestUpArguments(t *testing.T) {
	tests := []struct {
		args    []string
		wantErr string
	}{
		{[]string{"--hosts", "0"}, "--hosts 0"},
		{[]string{"--backend", "udp"}, `--backend "udp"`},
		{[]string{"--backend", "host-gw", "--routed-hosts", "1"}, "one L2 segment"},
		{[]string{"--network", "10.5.0.1/16"}, "--network 10.5.0.1/16"},
		{[]string{"--network", "nonsense"}, "--network"},
		{[]string{"--once", "--detach"}, "exclude each other"},
		{[]string{"--containers-per-host", "-1"}, "--containers-per-host"},
		{[]string{"extra"}, "unexpected arguments"},
		{[]string{"--network", "fd00:6::/48"}, "--network fd00:6::/48: want an IPv4 prefix"},
		{[]string{"--network", "10.5.0.0/29"}, "--network 10.5.0.0/29"},
		{[]string{"--network", "10.5.0.0/26", "--hosts", "4"}, "--network 10.5.0.0/26 leases 3 subnets of /28, fewer than the 4 hosts"},
		{[]string{"--ipv6", "yes"}, `--ipv6 "yes": want off, dual or only`},
		{[]string{"--ipv6", "v6only"}, `--ipv6 "v6only"`},
		{[]string{"--ipv6-network", "fd00:6::/48"}, "--ipv6-network needs --ipv6 dual or --ipv6 only"},
		{[]string{"--ipv6", "only", "--network", "10.6.0.0/16"}, "--network is the IPv4 overlay"},
		{[]string{"--ipv6", "dual", "--ipv6-network", "10.6.0.0/16"}, "--ipv6-network 10.6.0.0/16: want an IPv6 prefix"},
		{[]string{"--ipv6", "dual", "--ipv6-network", "::ffff:10.6.0.0/112"}, "want an IPv6 prefix"},
		{[]string{"--ipv6", "only", "--ipv6-network", "nonsense"}, "--ipv6-network"},
		{[]string{"--ipv6", "dual", "--ipv6-network", "fd00:5::1/48"}, "--ipv6-network fd00:5::1/48"},
		{[]string{"--ipv6", "only", "--ipv6-network", "fd00:5::/125"}, "--ipv6-network fd00:5::/125"},
		{[]string{"--ipv6", "dual", "--ipv6-network", "fd00:5::/120", "--hosts", "4"}, "--ipv6-network fd00:5::/120 leases 3 subnets of /122, fewer than the 4 hosts"},
		{[]string{"--ipv6", "dual", "--network", "10.5.0.1/16"}, "--network 10.5.0.1/16"},
		{[]string{"--runtime", "lxc"}, `--runtime "lxc": want none, docker or podman`},
		{[]string{"--store", "consul"}, `--store "consul": want etcd or kubernetes`},
		{[]string{"--runtime", "docker", "--ipv6", "dual"}, "--runtime docker: the lab runs its containers on IPv4 only"},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			err := run(t.Context(), append([]string{"up"}, tt.args...), &stdout, &stderr)
			var u usageError
			if !errors.As(err, &u) || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("up %q = %v, want a usage error containing %q", tt.args, err, tt.wantErr)
			}
		})
	}
	var stdout, stderr bytes.Buffer
	if err := run(t.Context(), []string{"up", "-h"}, &stdout, &stderr); !errors.Is(err, flag.ErrHelp) {
		t.Errorf("up -h = %v, want flag.ErrHelp", err)
	}
	o, err := parseUp([]string{"--backend", "host-gw", "--network", "10.9.0.0/16"}, &stderr)
	if err != nil {
		t.Fatal(err)
	}
	cfg, _, err := o.config()
	if err != nil || string(cfg) != `{"Backend":{"Type":"host-gw"},"Network":"10.9.0.0/16"}` {
		t.Errorf("config %s, %v", cfg, err)
	}
	for _, tt := range []struct {
		args []string
		want time.Duration
	}{
		{nil, 60 * time.Second},
		{[]string{"--runtime", "docker"}, runtimeTimeout},
		{[]string{"--runtime", "podman", "--timeout", "2m"}, 2 * time.Minute},
	} {
		o, err := parseUp(tt.args, &stderr)
		if err != nil {
			t.Errorf("up %q: %v", tt.args, err)
		} else if o.timeout != tt.want {
			t.Errorf("up %q: timeout %v, want %v", tt.args, o.timeout, tt.want)
		}
	}
}
