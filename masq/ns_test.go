package masq

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/netagent/netagent/internal/nstest"
)

// testNS is a network namespace made for one test (nstest.NS), deleted at
// its end, with the short names these tests use.
type testNS struct{ *nstest.NS }

func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: programs iptables and nftables in network namespaces it creates")
	}
}

func requireCmd(t *testing.T, names ...string) {
	t.Helper()
	for _, n := range names {
		if _, err := exec.LookPath(n); err != nil {
			// As root (CI) the tools are part of the suite: scripts/test.sh
			// installs them, and a skip would pass for a test never run.
			if os.Geteuid() == 0 {
				t.Fatalf("%s not installed (scripts/deps.sh installs it): %v", n, err)
			}
			t.Skipf("%s not installed: %v", n, err)
		}
	}
}

// newNS creates a network namespace (with lo up) and deletes it when the
// test ends.
func newNS(t *testing.T) *testNS {
	t.Helper()
	requireRoot(t)
	return &testNS{nstest.NewNS(t, "masq")}
}

// do runs f on a thread inside the namespace; commands f executes inherit
// the namespace.
func (n *testNS) do(t *testing.T, f func() error) {
	t.Helper()
	if err := n.Do(f); err != nil {
		t.Fatalf("in %s: %v", n.Name, err)
	}
}

// sh runs a command inside the namespace and returns its output.
func (n *testNS) sh(t *testing.T, args ...string) string {
	t.Helper()
	return n.Exec(t, args...)
}

// try runs a command inside the namespace.
func (n *testNS) try(args ...string) (string, error) { return n.Try(args...) }

func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

var (
	saveCounters = regexp.MustCompile(`\[\d+:\d+\]`)
	nftCounters  = regexp.MustCompile(`packets \d+ bytes \d+`)
)

// rootSnapshot reads (only reads) the firewall state of the namespace the
// test process runs in: the root namespace.
func rootSnapshot(t *testing.T) string {
	t.Helper()
	var b strings.Builder
	for _, c := range [][]string{
		{"iptables-nft-save"}, {"ip6tables-nft-save"},
		{"iptables-legacy-save"}, {"ip6tables-legacy-save"},
		{"nft", "list", "ruleset"},
	} {
		if _, err := exec.LookPath(c[0]); err != nil {
			continue
		}
		out, err := exec.Command(c[0], c[1:]...).Output()
		if err != nil {
			t.Fatalf("%s: %v", strings.Join(c, " "), err)
		}
		fmt.Fprintf(&b, "== %s\n", strings.Join(c, " "))
		for _, line := range strings.Split(string(out), "\n") {
			if strings.HasPrefix(line, "#") {
				continue // timestamps
			}
			line = saveCounters.ReplaceAllString(line, "")
			line = nftCounters.ReplaceAllString(line, "")
			b.WriteString(line + "\n")
		}
	}
	return b.String()
}

// guardRoot fails the test if the root namespace's firewall state changed
// while it ran: the managers must act only in the namespace of the thread
// that calls them.
func guardRoot(t *testing.T) {
	t.Helper()
	requireRoot(t)
	before := rootSnapshot(t)
	t.Cleanup(func() {
		if after := rootSnapshot(t); after != before {
			t.Errorf("root namespace firewall changed during the test:\nbefore:\n%s\nafter:\n%s", before, after)
		}
	})
}
