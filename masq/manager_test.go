package masq

import (
	"context"
	"net/netip"
	"strings"
	"testing"
)

// The tests of this file run against every Manager: iptables in each of
// its modes, and nftables. What differs between them (how their rules read
// and how others tamper with them) is each backend's backendEnv, in
// iptables_test.go and nftables_test.go.

var (
	rulesA = Rules{
		Network:     netip.MustParsePrefix("10.5.0.0/16"),
		Subnet:      netip.MustParsePrefix("10.5.58.0/24"),
		IPv6Network: netip.MustParsePrefix("fd00:5::/48"),
		IPv6Subnet:  netip.MustParsePrefix("fd00:5:0:3a00::/56"),
	}
	rulesB = Rules{
		Network:     netip.MustParsePrefix("10.9.0.0/16"),
		Subnet:      netip.MustParsePrefix("10.9.7.0/24"),
		IPv6Network: netip.MustParsePrefix("fd00:9::/48"),
		IPv6Subnet:  netip.MustParsePrefix("fd00:9:0:700::/56"),
	}
)

// testManager is a Manager that also returns the changes its Apply made.
type testManager interface {
	Manager
	apply(ctx context.Context, r Rules) ([]string, error)
}

// mgrEnv is a namespace with a Manager under test: the part of a backend's
// test environment that does not depend on the backend.
type mgrEnv struct {
	t     *testing.T
	n     *testNS
	m     testManager
	newFn func(t *testing.T) (testManager, error)
}

// newMgrEnv makes a namespace and a manager in it with newFn.
func newMgrEnv(t *testing.T, newFn func(t *testing.T) (testManager, error)) *mgrEnv {
	t.Helper()
	e := &mgrEnv{t: t, n: newNS(t), newFn: newFn}
	e.m = e.newManager()
	return e
}

// newManager returns a new manager in the namespace, as a restarted agent
// makes one over the rules in place.
func (e *mgrEnv) newManager() testManager {
	e.t.Helper()
	var m testManager
	e.n.do(e.t, func() (err error) {
		m, err = e.newFn(e.t)
		return err
	})
	return m
}

// apply applies r with m in the namespace and returns the changes made.
func (e *mgrEnv) apply(m testManager, r Rules) []string {
	e.t.Helper()
	var changes []string
	e.n.do(e.t, func() (err error) {
		changes, err = m.apply(testCtx(e.t), r)
		return err
	})
	return changes
}

// check runs the env's manager's Check of r in the namespace.
func (e *mgrEnv) check(r Rules) (bool, string) {
	e.t.Helper()
	var (
		ok     bool
		reason string
	)
	e.n.do(e.t, func() (err error) {
		ok, reason, err = e.m.Check(testCtx(e.t), r)
		return err
	})
	return ok, reason
}

// remove runs the env's manager's Remove in the namespace.
func (e *mgrEnv) remove() {
	e.t.Helper()
	e.n.do(e.t, func() error { return e.m.Remove(testCtx(e.t)) })
}

// backendEnv is what the shared tests need of a backend's environment.
type backendEnv interface {
	env() *mgrEnv
	// addForeign installs rules of other programs, which Apply and Remove
	// must leave as they are; assertRules checks them from then on.
	addForeign()
	// assertRules checks that the namespace holds exactly r's rules, none
	// for a family r leaves unset, the foreign ones, and that Check agrees.
	assertRules(r Rules)
	// ruleset is the namespace's whole firewall state, without counters
	// and timestamps.
	ruleset() string
	// stamp marks the installed rules in a way that rewriting them would
	// undo (rule counters, rule handles) and returns the mark; stamped
	// reads it again.
	stamp() string
	stamped() string
	// tampers are changes that others may make to rulesA once applied,
	// each of which Apply must repair.
	tampers() []tamper
}

// tamper is a change to the installed rules.
type tamper struct {
	name string
	do   func()
}

// forEachBackend runs f in a subtest with a fresh environment of each
// backend: iptables in each mode, and nftables.
func forEachBackend(t *testing.T, f func(t *testing.T, b backendEnv)) {
	for _, mode := range iptablesModes {
		name := string(mode)
		if name == "" {
			name = "default"
		}
		t.Run("iptables-"+name, func(t *testing.T) { f(t, newIPTEnv(t, mode)) })
	}
	t.Run("nftables", func(t *testing.T) { f(t, newNFTEnv(t)) })
}

func TestManagerApplyExactAndIdempotent(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backendEnv) {
		e := b.env()
		b.addForeign()
		if ok, reason := e.check(rulesA); ok || reason == "" {
			t.Fatalf("Check before Apply = %v, %q; want not ok with a reason", ok, reason)
		}
		if changes := e.apply(e.m, rulesA); len(changes) == 0 {
			t.Fatal("first Apply reported no change")
		}
		b.assertRules(rulesA)

		want := b.stamp()
		if changes := e.apply(e.m, rulesA); len(changes) != 0 {
			t.Errorf("second Apply changed %q", changes)
		}
		if got := b.stamped(); got != want {
			t.Errorf("rules rewritten by a second Apply of the same rules:\n%s\nwant:\n%s", got, want)
		}

		// A restarted agent: a new manager over the rules in place.
		if changes := e.apply(e.newManager(), rulesA); len(changes) != 0 {
			t.Errorf("Apply of a new manager changed %q", changes)
		}
		if got := b.stamped(); got != want {
			t.Errorf("rules rewritten by a new manager's Apply of the same rules:\n%s\nwant:\n%s", got, want)
		}
		b.assertRules(rulesA)
	})
}

func TestManagerRepair(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backendEnv) {
		e := b.env()
		e.apply(e.m, rulesA)
		for _, tt := range b.tampers() {
			t.Run(tt.name, func(t *testing.T) {
				e.t = t
				tt.do()
				if ok, reason := e.check(rulesA); ok || reason == "" {
					t.Fatalf("Check after tampering = %v, %q; want not ok with a reason", ok, reason)
				} else {
					t.Logf("Check: %s", reason)
				}
				if changes := e.apply(e.m, rulesA); len(changes) == 0 {
					t.Fatal("Apply after tampering reported no change")
				}
				b.assertRules(rulesA)
			})
		}
		e.t = t
	})
}

func TestManagerNetworkChangeAndRemove(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backendEnv) {
		e := b.env()
		b.addForeign()
		before := b.ruleset()

		e.apply(e.m, rulesA)
		e.apply(e.m, rulesB)
		b.assertRules(rulesB)
		// rulesA's addresses are left only where others' rules have them.
		all := b.ruleset()
		for _, old := range []string{"10.5.58.0/24", "10.5.0.0/16", "fd00:5:"} {
			if got, want := strings.Count(all, old), strings.Count(before, old); got != want {
				t.Errorf("%s appears %d times, want %d (others' rules only):\n%s", old, got, want, all)
			}
		}

		// IPv4 only: the IPv6 rules go, the IPv4 ones stay.
		v4only := Rules{Network: rulesB.Network, Subnet: rulesB.Subnet}
		e.apply(e.m, v4only)
		b.assertRules(v4only)

		e.remove()
		if after := b.ruleset(); after != before {
			t.Errorf("after Remove:\n%s\nwant what was there before Apply:\n%s", after, before)
		}
		// Removing twice is fine, and so is Apply with no rules.
		e.remove()
		if changes := e.apply(e.m, Rules{}); len(changes) != 0 {
			t.Errorf("Apply(Rules{}) after Remove changed %q", changes)
		}
	})
}
