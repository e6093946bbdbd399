package masq

import (
	"fmt"
	"net/netip"
	"regexp"
	"strings"
	"testing"
)

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

// iptablesModes are the iptables variants the suite runs with.
var iptablesModes = []IPTablesMode{IPTablesDefault, IPTablesNFT, IPTablesLegacy}

// iptCmd is the iptables command of mode for IPv4 or IPv6.
func iptCmd(mode IPTablesMode, v6 bool) string {
	c := "iptables"
	if v6 {
		c = "ip6tables"
	}
	if mode != IPTablesDefault {
		c += "-" + string(mode)
	}
	return c
}

// wantPostrtg is SPEC section 5's chain for network n and subnet s, as
// `iptables -S FLANNEL-POSTRTG` prints it.
func wantPostrtg(n, s netip.Prefix) string {
	mc := "224.0.0.0/4"
	if n.Addr().Is6() {
		mc = "ff00::/8"
	}
	return fmt.Sprintf(`-N FLANNEL-POSTRTG
-A FLANNEL-POSTRTG -m mark --mark 0x4000/0x4000 -j RETURN
-A FLANNEL-POSTRTG -s %[2]s -d %[1]s -j RETURN
-A FLANNEL-POSTRTG -s %[1]s -d %[2]s -j RETURN
-A FLANNEL-POSTRTG ! -s %[1]s -d %[2]s -j RETURN
-A FLANNEL-POSTRTG -s %[1]s ! -d %[3]s -j MASQUERADE --random-fully
-A FLANNEL-POSTRTG ! -s %[1]s -d %[1]s -j MASQUERADE --random-fully
`, n, s, mc)
}

func wantFwd(n netip.Prefix) string {
	return fmt.Sprintf("-N FLANNEL-FWD\n-A FLANNEL-FWD -s %[1]s -j ACCEPT\n-A FLANNEL-FWD -d %[1]s -j ACCEPT\n", n)
}

type iptEnv struct {
	t    *testing.T
	n    *testNS
	mode IPTablesMode
	m    *IPTables
}

func newIPTEnv(t *testing.T, mode IPTablesMode) *iptEnv {
	t.Helper()
	requireCmd(t, iptCmd(mode, false), iptCmd(mode, false)+"-restore", iptCmd(mode, true), iptCmd(mode, true)+"-restore")
	guardRoot(t)
	e := &iptEnv{t: t, n: newNS(t), mode: mode}
	e.m = e.newManager()
	return e
}

func (e *iptEnv) newManager() *IPTables {
	var m *IPTables
	e.n.do(e.t, func() (err error) {
		m, err = NewIPTables(testLogger(e.t), WithIPTablesMode(e.mode))
		return err
	})
	return m
}

// ipt runs iptables (or ip6tables) of the env's mode in its namespace.
func (e *iptEnv) ipt(v6 bool, args ...string) string {
	e.t.Helper()
	return e.n.sh(e.t, append([]string{iptCmd(e.mode, v6)}, args...)...)
}

// apply applies r in the namespace and returns the changes made.
func (e *iptEnv) apply(m *IPTables, r Rules) []string {
	e.t.Helper()
	var changes []string
	e.n.do(e.t, func() (err error) {
		changes, err = m.apply(testCtx(e.t), r)
		return err
	})
	return changes
}

func (e *iptEnv) check(r Rules) (bool, string) {
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

// jumpLine is the rule iptables -S prints for the jump to chain.
func jumpLine(hook, comment, chain string) string {
	return fmt.Sprintf(`-A %s -m comment --comment "%s" -j %s`, hook, comment, chain)
}

// assertRules checks that the namespace holds exactly r's rules, with the
// jumps first in POSTROUTING and FORWARD followed by foreign, given as
// `iptables -S` lines per hook ("POSTROUTING") for IPv4 and per "ip6 " and
// hook for IPv6.
func (e *iptEnv) assertRules(r Rules, foreign map[string][]string) {
	e.t.Helper()
	for _, fam := range []struct {
		v6   bool
		n, s netip.Prefix
	}{{false, r.Network, r.Subnet}, {true, r.IPv6Network, r.IPv6Subnet}} {
		if got := e.ipt(fam.v6, "-t", "nat", "-S", ChainPostrouting); got != wantPostrtg(fam.n, fam.s) {
			e.t.Errorf("v6=%v nat %s:\n%s\nwant:\n%s", fam.v6, ChainPostrouting, got, wantPostrtg(fam.n, fam.s))
		}
		if got := e.ipt(fam.v6, "-t", "filter", "-S", ChainForward); got != wantFwd(fam.n) {
			e.t.Errorf("v6=%v filter %s:\n%s\nwant:\n%s", fam.v6, ChainForward, got, wantFwd(fam.n))
		}
		for _, h := range []struct{ table, hook, policy, comment, chain string }{
			{"nat", "POSTROUTING", "ACCEPT", "netagent masq", ChainPostrouting},
			{"filter", "FORWARD", "ACCEPT", "netagent forward", ChainForward},
		} {
			want := []string{"-P " + h.hook + " " + h.policy, jumpLine(h.hook, h.comment, h.chain)}
			key := h.hook
			if fam.v6 {
				key = "ip6 " + key
			}
			want = append(want, foreign[key]...)
			if got := e.ipt(fam.v6, "-t", h.table, "-S", h.hook); got != strings.Join(want, "\n")+"\n" {
				e.t.Errorf("v6=%v %s %s:\n%s\nwant:\n%s", fam.v6, h.table, h.hook, got, strings.Join(want, "\n"))
			}
		}
	}
	if ok, reason := e.check(r); !ok {
		e.t.Errorf("Check after Apply: not ok: %s", reason)
	}
}

var countersRe = regexp.MustCompile(`\[(\d+):(\d+)\] -A FLANNEL-POSTRTG -m mark`)

// setMarkCounters sets the counters of the first rule of FLANNEL-POSTRTG,
// which a rewrite of the chain would reset.
func (e *iptEnv) setMarkCounters() {
	e.ipt(false, "-t", "nat", "-R", ChainPostrouting, "1", "-c", "7", "700", "-m", "mark", "--mark", "0x4000/0x4000", "-j", "RETURN")
}

func (e *iptEnv) markCounters() string {
	e.t.Helper()
	save := e.n.sh(e.t, iptCmd(e.mode, false)+"-save", "-c", "-t", "nat")
	m := countersRe.FindStringSubmatch(save)
	if m == nil {
		e.t.Fatalf("no counters for the mark rule in:\n%s", save)
	}
	return m[1] + ":" + m[2]
}

func forEachMode(t *testing.T, f func(t *testing.T, mode IPTablesMode)) {
	for _, mode := range iptablesModes {
		name := string(mode)
		if name == "" {
			name = "default"
		}
		t.Run(name, func(t *testing.T) { f(t, mode) })
	}
}

func TestIPTablesApplyExactAndIdempotent(t *testing.T) {
	forEachMode(t, func(t *testing.T, mode IPTablesMode) {
		e := newIPTEnv(t, mode)
		foreign := map[string][]string{
			"POSTROUTING": {"-A POSTROUTING -s 192.168.5.0/24 -j MASQUERADE"},
			"FORWARD":     {"-A FORWARD -i eth9 -j DROP"},
		}
		e.ipt(false, "-t", "nat", "-A", "POSTROUTING", "-s", "192.168.5.0/24", "-j", "MASQUERADE")
		e.ipt(false, "-t", "filter", "-A", "FORWARD", "-i", "eth9", "-j", "DROP")

		if ok, reason := e.check(rulesA); ok || reason == "" {
			t.Fatalf("Check before Apply = %v, %q; want not ok with a reason", ok, reason)
		}
		if changes := e.apply(e.m, rulesA); len(changes) == 0 {
			t.Fatal("first Apply reported no change")
		}
		e.assertRules(rulesA, foreign)

		e.setMarkCounters()
		if changes := e.apply(e.m, rulesA); len(changes) != 0 {
			t.Errorf("second Apply changed %q", changes)
		}
		if got := e.markCounters(); got != "7:700" {
			t.Errorf("counters of the mark rule after a second Apply = %s, want 7:700 (chain rewritten)", got)
		}

		// A restarted agent: a new manager over the rules in place.
		if changes := e.apply(e.newManager(), rulesA); len(changes) != 0 {
			t.Errorf("Apply of a new manager changed %q", changes)
		}
		if got := e.markCounters(); got != "7:700" {
			t.Errorf("counters after a new manager's Apply = %s, want 7:700 (chain rewritten)", got)
		}
		e.assertRules(rulesA, foreign)
	})
}

func TestIPTablesRepair(t *testing.T) {
	forEachMode(t, func(t *testing.T, mode IPTablesMode) {
		e := newIPTEnv(t, mode)
		e.apply(e.m, rulesA)
		n, s := rulesA.Network.String(), rulesA.Subnet.String()
		tests := []struct {
			name   string
			tamper [][]string // iptables (IPv4) argument lists
		}{
			{"rule deleted", [][]string{{"-t", "nat", "-D", ChainPostrouting, "-s", s, "-d", n, "-j", "RETURN"}}},
			{"rules reordered", [][]string{
				{"-t", "nat", "-D", ChainPostrouting, "1"},
				{"-t", "nat", "-A", ChainPostrouting, "-m", "mark", "--mark", "0x4000/0x4000", "-j", "RETURN"},
			}},
			{"stray rule appended", [][]string{{"-t", "nat", "-A", ChainPostrouting, "-s", "1.2.3.4", "-j", "RETURN"}}},
			{"stray rule inserted", [][]string{{"-t", "filter", "-I", ChainForward, "1", "-s", "1.2.3.4", "-j", "DROP"}}},
			{"rule changed", [][]string{{"-t", "nat", "-R", ChainPostrouting, "5", "-s", n, "!", "-d", "224.0.0.0/4", "-j", "MASQUERADE"}}},
			{"chain flushed", [][]string{{"-t", "filter", "-F", ChainForward}}},
			{"jump deleted", [][]string{{"-t", "nat", "-D", "POSTROUTING", "-m", "comment", "--comment", "netagent masq", "-j", ChainPostrouting}}},
			{"jump duplicated", [][]string{{"-t", "nat", "-A", "POSTROUTING", "-m", "comment", "--comment", "netagent masq", "-j", ChainPostrouting}}},
			{"flannel's jump added", [][]string{{"-t", "filter", "-A", "FORWARD", "-m", "comment", "--comment", "flanneld forward", "-j", ChainForward}}},
			{"chain deleted", [][]string{
				{"-t", "nat", "-D", "POSTROUTING", "-m", "comment", "--comment", "netagent masq", "-j", ChainPostrouting},
				{"-t", "nat", "-F", ChainPostrouting},
				{"-t", "nat", "-X", ChainPostrouting},
			}},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				e.t = t
				for _, args := range tt.tamper {
					e.ipt(false, args...)
				}
				if ok, reason := e.check(rulesA); ok || reason == "" {
					t.Fatalf("Check after tampering = %v, %q; want not ok with a reason", ok, reason)
				} else {
					t.Logf("Check: %s", reason)
				}
				if changes := e.apply(e.m, rulesA); len(changes) == 0 {
					t.Fatal("Apply after tampering reported no change")
				}
				e.assertRules(rulesA, nil)
			})
		}
	})
}

func TestIPTablesNetworkChangeAndRemove(t *testing.T) {
	forEachMode(t, func(t *testing.T, mode IPTablesMode) {
		e := newIPTEnv(t, mode)
		// Others' rules, which must survive everything.
		e.ipt(false, "-t", "nat", "-N", "OTHER")
		e.ipt(false, "-t", "nat", "-A", "OTHER", "-s", "10.5.0.0/16", "-j", "RETURN")
		e.ipt(false, "-t", "nat", "-A", "POSTROUTING", "-j", "OTHER")
		e.ipt(false, "-t", "filter", "-A", "FORWARD", "-o", "eth9", "-j", "ACCEPT")
		e.ipt(true, "-t", "filter", "-A", "FORWARD", "-s", "fd00:5::/48", "-j", "ACCEPT")
		e.ipt(true, "-t", "nat", "-A", "POSTROUTING", "-o", "eth9", "-j", "MASQUERADE")
		foreign := map[string][]string{
			"POSTROUTING":     {"-A POSTROUTING -j OTHER"},
			"FORWARD":         {"-A FORWARD -o eth9 -j ACCEPT"},
			"ip6 POSTROUTING": {"-A POSTROUTING -o eth9 -j MASQUERADE"},
			"ip6 FORWARD":     {"-A FORWARD -s fd00:5::/48 -j ACCEPT"},
		}
		save := func() string {
			return e.n.sh(t, iptCmd(mode, false)+"-save") + e.n.sh(t, iptCmd(mode, true)+"-save")
		}
		before := strip(save())

		e.apply(e.m, rulesA)
		e.apply(e.m, rulesB)
		e.assertRules(rulesB, foreign)
		all := save()
		for _, old := range []string{"10.5.58.0/24", "fd00:5:0:3a00::/56"} {
			if strings.Contains(all, old) {
				t.Errorf("old subnet %s still in the rules:\n%s", old, all)
			}
		}
		if got := strings.Count(all, "10.5.0.0/16"); got != 1 {
			t.Errorf("old network 10.5.0.0/16 appears %d times, want once (the foreign rule):\n%s", got, all)
		}

		// IPv4 only: the IPv6 chains go, the IPv4 ones stay.
		v4only := Rules{Network: rulesB.Network, Subnet: rulesB.Subnet}
		e.apply(e.m, v4only)
		if got := e.ipt(true, "-t", "nat", "-S"); strings.Contains(got, "FLANNEL") {
			t.Errorf("IPv6 nat after an IPv4-only Apply:\n%s", got)
		}
		if got := e.ipt(false, "-t", "nat", "-S", ChainPostrouting); got != wantPostrtg(v4only.Network, v4only.Subnet) {
			t.Errorf("IPv4 chain after an IPv4-only Apply:\n%s", got)
		}

		e.n.do(t, func() error { return e.m.Remove(testCtx(t)) })
		if after := strip(save()); after != before {
			t.Errorf("after Remove:\n%s\nwant what was there before Apply:\n%s", after, before)
		}
		// Removing twice is fine, and so is Apply with no rules.
		e.n.do(t, func() error { return e.m.Remove(testCtx(t)) })
		if changes := e.apply(e.m, Rules{}); len(changes) != 0 {
			t.Errorf("Apply(Rules{}) after Remove changed %q", changes)
		}
	})
}

// strip drops comments (timestamps) and counters from iptables-save output.
func strip(save string) string {
	var out []string
	for _, l := range strings.Split(save, "\n") {
		if !strings.HasPrefix(l, "#") {
			out = append(out, saveCounters.ReplaceAllString(l, ""))
		}
	}
	return strings.Join(out, "\n")
}
