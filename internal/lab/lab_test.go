package lab

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"
)

// binDir holds the binaries built once for this test run.

var binDir string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "netagent-lab-test-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binDir = dir
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

var (
	buildOnce sync.Once
	labBin    string
	buildErr  error
)

// labBinary builds ./cmd/netagent-lab once per test run.

func labBinary(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		var bins map[string]string
		bins, buildErr = BuildBinaries(ctx, binDir, "./cmd/netagent-lab")
		labBin = bins["./cmd/netagent-lab"]
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return labBin
}

func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to create network namespaces")
	}
}

// rootState lists, read-only, the initial namespace's links, addresses and

// routes, without counters or timers, for a before/after comparison.

func rootState(t *testing.T) string {
	t.Helper()
	var b strings.Builder
	expires := regexp.MustCompile(`(valid_lft|preferred_lft|expires) \S+`)
	for _, argv := range [][]string{
		{"-o", "link", "show"},
		{"-o", "addr", "show"},
		{"route", "show", "table", "all"},
		{"-6", "route", "show", "table", "all"},
	} {
		out, err := exec.Command("ip", argv...).Output()
		if err != nil {
			t.Fatalf("ip %v: %v", argv, err)
		}
		b.WriteString(expires.ReplaceAllString(string(out), "$1 -"))
	}
	return b.String()
}

// labNamespaces returns the existing namespaces named with prefix.

func labNamespaces(t *testing.T, prefix string) []string {
	t.Helper()
	all, err := ListNamespaces(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var mine []string
	for _, ns := range all {
		if strings.HasPrefix(ns, prefix+"-") {
			mine = append(mine, ns)
		}
	}
	return mine
}

// newLab builds a lab that is closed at the end of the test, and checks

// then that nothing of it is left and the initial namespace is unchanged.

func newLab(t *testing.T, opts Options) *Lab {
	t.Helper()
	requireRoot(t)
	before := rootState(t)
	if opts.Dir == "" {
		opts.Dir = t.TempDir()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	l, err := New(ctx, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := l.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
		if left := labNamespaces(t, l.Prefix()); len(left) > 0 {
			t.Errorf("namespaces left after Close: %v", left)
		}
		if after := rootState(t); after != before {
			t.Errorf("initial namespace changed:\nbefore:\n%s\nafter:\n%s", before, after)
		}
	})
	return l
}

func testCtx(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), d)
	t.Cleanup(cancel)
	return ctx
}

func TestOptionsValidate(t *testing.T) {
	tests := []struct {
		name    string
		opts    Options
		wantErr bool
	}{
		{"one host", Options{Hosts: 1}, false},
		{"routed", Options{Hosts: 3, RoutedHosts: 1}, false},
		{"no hosts", Options{}, true},
		{"negative routed", Options{Hosts: 1, RoutedHosts: -1}, true},
		{"too many", Options{Hosts: 150, RoutedHosts: 51}, true},
		{"max", Options{Hosts: 150, RoutedHosts: 50}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := tt.opts.Validate(); (err != nil) != tt.wantErr {
				t.Errorf("Validate() = %v, want error %v", err, tt.wantErr)
			}
		})
	}
}

func TestRefusesInitialNamespace(t *testing.T) {
	paths := []string{"/proc/self/ns/net", "/proc/thread-self/ns/net"}
	if _, err := os.Stat("/proc/1/ns/net"); err == nil {
		paths = append(paths, "/proc/1/ns/net")
	}
	for _, path := range paths {
		if err := checkNotInitial(path); !errors.Is(err, ErrInitialNamespace) {
			t.Errorf("checkNotInitial(%s) = %v, want ErrInitialNamespace", path, err)
		}
	}
	// The test process runs in the initial namespace.
	if initial, err := InInitialNetns(); err != nil || !initial {
		t.Errorf("InInitialNetns() = %v, %v; want true", initial, err)
	}
	if _, err := DialInNS(t.Context(), "nonexistent", "tcp", "example.com:80"); err == nil || !strings.Contains(err.Error(), "not an IP") {
		t.Errorf("DialInNS with a name = %v, want a refusal", err)
	}
}

func TestTopology(t *testing.T) {
	tests := []struct {
		name          string
		hosts, routed int
	}{
		{"three hosts", 3, 0},
		{"three hosts and a routed one", 3, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			l := newLab(t, Options{Hosts: tt.hosts, RoutedHosts: tt.routed})
			ctx := testCtx(t, 30*time.Second)
			hosts := l.Hosts()
			if len(hosts) != tt.hosts+tt.routed {
				t.Fatalf("got %d hosts, want %d", len(hosts), tt.hosts+tt.routed)
			}
			for _, h := range hosts {
				out, err := l.Exec(ctx, h.NS, "ip", "route", "show", "default")
				if err != nil {
					t.Fatal(err)
				}
				if want := "default via " + h.Gateway.String() + " dev eth0"; !strings.Contains(string(out), want) {
					t.Errorf("%s: default route %q, want %q", h.Name, out, want)
				}
				out, err = l.Exec(ctx, h.NS, "sysctl", "-n", "net.ipv4.ip_forward")
				if err != nil || strings.TrimSpace(string(out)) != "1" {
					t.Errorf("%s: ip_forward = %q, %v; want 1", h.Name, out, err)
				}
				for _, other := range hosts {
					if other == h {
						continue
					}
					// One echo, to read the TTL: 64 on the same
					// underlay, 63 through the router.
					out, err := l.Exec(ctx, h.NS, "ping", "-n", "-c", "1", "-W", "1", other.Underlay.Addr().String())
					if err != nil {
						t.Errorf("%s -> %s: %v", h.Name, other.Name, err)
						continue
					}
					wantTTL := "ttl=64"
					if h.Routed != other.Routed {
						wantTTL = "ttl=63"
					}
					if !strings.Contains(string(out), wantTTL) {
						t.Errorf("%s -> %s: want %s in %q", h.Name, other.Name, wantTTL, out)
					}
				}
				if _, err := l.Ping(ctx, h.NS, EtcdAddr, PingOptions{Count: 2}); err != nil {
					t.Errorf("%s -> etcd namespace: %v", h.Name, err)
				}
				if _, err := l.Ping(ctx, h.NS, h.Underlay.Addr(), PingOptions{Size: 1472, DontFragment: true}); err != nil {
					t.Errorf("%s: full-size local ping: %v", h.Name, err)
				}
			}
			// InInitialNetns tells a lab namespace from the initial one.
			initial, err := inNS(t, hosts[0].NS, InInitialNetns)
			if err != nil || initial {
				t.Errorf("InInitialNetns() in %s = %v, %v; want false", hosts[0].NS, initial, err)
			}
			// The underlay MTU is 1500: 1472 bytes of ICMP payload fit
			// unfragmented, 1473 do not.
			h1, h2 := hosts[0], hosts[1]
			if _, err := l.Ping(ctx, h1.NS, h2.Underlay.Addr(), PingOptions{Count: 2, Size: 1472, DontFragment: true}); err != nil {
				t.Errorf("1472-byte ping with DF: %v", err)
			}
			if _, err := l.Ping(ctx, h1.NS, h2.Underlay.Addr(), PingOptions{Count: 1, Size: 1473, DontFragment: true}); err == nil {
				t.Error("1473-byte ping with DF passed a 1500 MTU")
			}
		})
	}
}

func TestNewCleansUpAfterFailure(t *testing.T) {
	requireRoot(t)
	for _, step := range []string{"namespaces", "switch", "router", "etcd", "hosts"} {
		t.Run(step, func(t *testing.T) {
			t.Parallel()
			before := rootState(t)
			var prefix string
			var created int
			injected := errors.New("injected failure")
			opts := Options{Hosts: 2, RoutedHosts: 1, Dir: t.TempDir()}
			opts.afterStep = func(l *Lab, s string) error {
				prefix = l.Prefix()
				created = len(labNamespaces(t, prefix))
				if s == step {
					return injected
				}
				return nil
			}
			l, err := New(testCtx(t, 30*time.Second), opts)
			if !errors.Is(err, injected) {
				if l != nil {
					l.Close()
				}
				t.Fatalf("New = %v, want the injected failure", err)
			}
			if created != 6 {
				t.Errorf("%d namespaces existed at the failure, want 6", created)
			}
			if left := labNamespaces(t, prefix); len(left) > 0 {
				t.Errorf("namespaces left after a failed New: %v", left)
			}
			if after := rootState(t); after != before {
				t.Errorf("initial namespace changed:\nbefore:\n%s\nafter:\n%s", before, after)
			}
		})
	}
}

// inNS runs f on a thread switched into the namespace ns (doInNS), and
// returns its results.
func inNS[T any](t *testing.T, ns string, f func() (T, error)) (T, error) {
	t.Helper()
	var v T
	err := doInNS(ns, func() (err error) {
		v, err = f()
		return err
	}, func() {})
	return v, err
}
