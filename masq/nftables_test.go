package masq

import (
	"fmt"
	"net/netip"
	"regexp"
	"strings"
	"testing"
)

// wantNFT is SPEC section 5's rules as `nft list table FAM netagent`
// (nftables 1.0) prints them.
func wantNFT(fam string, n, s netip.Prefix) string {
	mc := "224.0.0.0/4"
	if fam == "ip6" {
		mc = "ff00::/8"
	}
	return fmt.Sprintf(`table %[1]s netagent {
	chain postrouting {
		type nat hook postrouting priority srcnat; policy accept;
		meta mark & 0x00004000 == 0x00004000 return
		%[1]s saddr %[3]s %[1]s daddr %[2]s return
		%[1]s saddr %[2]s %[1]s daddr %[3]s return
		%[1]s saddr != %[2]s %[1]s daddr %[3]s return
		%[1]s saddr %[2]s %[1]s daddr != %[4]s masquerade fully-random
		%[1]s saddr != %[2]s %[1]s daddr %[2]s masquerade fully-random
	}

	chain forward {
		type filter hook forward priority filter; policy accept;
		%[1]s saddr %[2]s accept
		%[1]s daddr %[2]s accept
	}
}
`, fam, n, s, mc)
}

type nftEnv struct {
	t *testing.T
	n *testNS
	m *NFTables
}

func newNFTEnv(t *testing.T) *nftEnv {
	t.Helper()
	requireCmd(t, "nft")
	guardRoot(t)
	e := &nftEnv{t: t, n: newNS(t)}
	e.m = e.newManager()
	return e
}

func (e *nftEnv) newManager() *NFTables {
	var m *NFTables
	e.n.do(e.t, func() (err error) {
		m, err = NewNFTables(testLogger(e.t))
		return err
	})
	return m
}

func (e *nftEnv) nft(args ...string) string {
	e.t.Helper()
	return e.n.sh(e.t, append([]string{"nft"}, args...)...)
}

func (e *nftEnv) apply(m *NFTables, r Rules) []string {
	e.t.Helper()
	var changes []string
	e.n.do(e.t, func() (err error) {
		changes, err = m.apply(testCtx(e.t), r)
		return err
	})
	return changes
}

func (e *nftEnv) check(r Rules) (bool, string) {
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

func (e *nftEnv) assertRules(r Rules) {
	e.t.Helper()
	if got, want := e.nft("list", "table", "ip", NFTable), wantNFT("ip", r.Network, r.Subnet); got != want {
		e.t.Errorf("table ip:\n%s\nwant:\n%s", got, want)
	}
	if got, want := e.nft("list", "table", "ip6", NFTable), wantNFT("ip6", r.IPv6Network, r.IPv6Subnet); got != want {
		e.t.Errorf("table ip6:\n%s\nwant:\n%s", got, want)
	}
	if ok, reason := e.check(r); !ok {
		e.t.Errorf("Check after Apply: not ok: %s", reason)
	}
}

// handles lists the tables with rule handles: a rewrite gives new ones.
func (e *nftEnv) handles() string {
	return e.nft("-a", "list", "table", "ip", NFTable) + e.nft("-a", "list", "table", "ip6", NFTable)
}

var handleRe = regexp.MustCompile(`# handle (\d+)`)

// ruleHandle returns the handle of the first rule of the ip table's chain
// that contains substr.
func (e *nftEnv) ruleHandle(chain, substr string) string {
	e.t.Helper()
	for _, l := range strings.Split(e.nft("-a", "list", "chain", "ip", NFTable, chain), "\n") {
		if strings.Contains(l, substr) {
			if m := handleRe.FindStringSubmatch(l); m != nil {
				return m[1]
			}
		}
	}
	e.t.Fatalf("no rule with %q in chain %s", substr, chain)
	return ""
}

func TestNFTablesApplyExactAndIdempotent(t *testing.T) {
	e := newNFTEnv(t)
	if ok, reason := e.check(rulesA); ok || reason == "" {
		t.Fatalf("Check before Apply = %v, %q; want not ok with a reason", ok, reason)
	}
	if changes := e.apply(e.m, rulesA); len(changes) == 0 {
		t.Fatal("first Apply reported no change")
	}
	e.assertRules(rulesA)

	before := e.handles()
	if changes := e.apply(e.m, rulesA); len(changes) != 0 {
		t.Errorf("second Apply changed %q", changes)
	}
	// A restarted agent: a new manager over the tables in place.
	if changes := e.apply(e.newManager(), rulesA); len(changes) != 0 {
		t.Errorf("Apply of a new manager changed %q", changes)
	}
	if after := e.handles(); after != before {
		t.Errorf("tables rewritten by Apply of the same rules:\nbefore:\n%s\nafter:\n%s", before, after)
	}
}

func TestNFTablesRepair(t *testing.T) {
	e := newNFTEnv(t)
	e.apply(e.m, rulesA)
	tests := []struct {
		name   string
		tamper func() [][]string // nft argument lists
	}{
		{"rule deleted", func() [][]string {
			return [][]string{{"delete", "rule", "ip", NFTable, "postrouting", "handle", e.ruleHandle("postrouting", "ip daddr 10.5.0.0/16 return")}}
		}},
		{"rules reordered", func() [][]string {
			h := e.ruleHandle("postrouting", "meta mark")
			return [][]string{
				{"delete", "rule", "ip", NFTable, "postrouting", "handle", h},
				{"add", "rule", "ip", NFTable, "postrouting", "meta", "mark", "&", "0x4000", "==", "0x4000", "return"},
			}
		}},
		{"stray rule appended", func() [][]string {
			return [][]string{{"add", "rule", "ip", NFTable, "postrouting", "ip", "saddr", "1.2.3.4", "return"}}
		}},
		{"stray rule inserted", func() [][]string {
			return [][]string{{"insert", "rule", "ip6", NFTable, "forward", "ip6", "saddr", "::1", "drop"}}
		}},
		{"stray chain", func() [][]string {
			return [][]string{{"add", "chain", "ip", NFTable, "extra"}}
		}},
		{"chain flushed", func() [][]string {
			return [][]string{{"flush", "chain", "ip", NFTable, "forward"}}
		}},
		{"chain deleted", func() [][]string {
			return [][]string{{"delete", "chain", "ip", NFTable, "postrouting"}}
		}},
		{"table deleted", func() [][]string {
			return [][]string{{"delete", "table", "ip6", NFTable}}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e.t = t
			for _, args := range tt.tamper() {
				e.nft(args...)
			}
			if ok, reason := e.check(rulesA); ok || reason == "" {
				t.Fatalf("Check after tampering = %v, %q; want not ok with a reason", ok, reason)
			} else {
				t.Logf("Check: %s", reason)
			}
			if changes := e.apply(e.m, rulesA); len(changes) == 0 {
				t.Fatal("Apply after tampering reported no change")
			}
			e.assertRules(rulesA)
		})
	}
}

func TestNFTablesNetworkChangeAndRemove(t *testing.T) {
	e := newNFTEnv(t)
	// Others' tables, which must survive everything.
	e.nft("add", "table", "inet", "other")
	e.nft("add", "chain", "inet", "other", "post", "{ type nat hook postrouting priority 50; }")
	e.nft("add", "rule", "inet", "other", "post", "ip", "saddr", "10.5.0.0/16", "return")
	before := e.nft("list", "ruleset")

	e.apply(e.m, rulesA)
	e.apply(e.m, rulesB)
	e.assertRules(rulesB)
	all := e.nft("list", "ruleset")
	for _, old := range []string{"10.5.58.0/24", "fd00:5:"} {
		if strings.Contains(all, old) {
			t.Errorf("old subnet %s still in the rules:\n%s", old, all)
		}
	}

	v4only := Rules{Network: rulesB.Network, Subnet: rulesB.Subnet}
	e.apply(e.m, v4only)
	if got := e.nft("list", "tables"); strings.Contains(got, "ip6 "+NFTable) {
		t.Errorf("tables after an IPv4-only Apply:\n%s", got)
	}
	if got, want := e.nft("list", "table", "ip", NFTable), wantNFT("ip", v4only.Network, v4only.Subnet); got != want {
		t.Errorf("table ip after an IPv4-only Apply:\n%s", got)
	}

	e.n.do(t, func() error { return e.m.Remove(testCtx(t)) })
	if after := e.nft("list", "ruleset"); after != before {
		t.Errorf("after Remove:\n%s\nwant what was there before Apply:\n%s", after, before)
	}
	e.n.do(t, func() error { return e.m.Remove(testCtx(t)) })
	if changes := e.apply(e.m, Rules{}); len(changes) != 0 {
		t.Errorf("Apply(Rules{}) after Remove changed %q", changes)
	}
}
