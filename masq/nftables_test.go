package masq

import (
	"fmt"
	"net/netip"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// wantNFT is the rules of docs/compatibility.md §7.2 as `nft list table FAM netagent`
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

// nftEnv is the backendEnv of nftables.
type nftEnv struct {
	*mgrEnv
	foreign string // `nft list table inet other` once addForeign ran
}

func newNFTEnv(t *testing.T) *nftEnv {
	t.Helper()
	requireCmd(t, "nft")
	guardRoot(t)
	return &nftEnv{mgrEnv: newMgrEnv(t, func(t *testing.T) (testManager, error) {
		return NewNFTables(testLogger(t))
	})}
}

func (e *nftEnv) env() *mgrEnv { return e.mgrEnv }

func (e *nftEnv) nft(args ...string) string {
	e.t.Helper()
	return e.n.sh(e.t, append([]string{"nft"}, args...)...)
}

// addForeign adds another program's table, with a base chain on the
// postrouting hook.
func (e *nftEnv) addForeign() {
	e.t.Helper()
	e.nft("add", "table", "inet", "other")
	e.nft("add", "chain", "inet", "other", "post", "{ type nat hook postrouting priority 50; }")
	e.nft("add", "rule", "inet", "other", "post", "ip", "saddr", "10.5.0.0/16", "return")
	e.foreign = e.nft("list", "table", "inet", "other")
}

// assertRules checks the tables ip and ip6 netagent (or that there is none
// for a family r leaves unset) and the foreign table.
func (e *nftEnv) assertRules(r Rules) {
	e.t.Helper()
	for _, fam := range []struct {
		name string
		n, s netip.Prefix
	}{{"ip", r.Network, r.Subnet}, {"ip6", r.IPv6Network, r.IPv6Subnet}} {
		if !fam.n.IsValid() {
			if got := e.nft("list", "tables"); slices.Contains(strings.Split(got, "\n"), "table "+fam.name+" "+NFTable) {
				e.t.Errorf("tables with no rules for %s:\n%s", fam.name, got)
			}
			continue
		}
		if got, want := e.nft("list", "table", fam.name, NFTable), wantNFT(fam.name, fam.n, fam.s); got != want {
			e.t.Errorf("table %s:\n%s\nwant:\n%s", fam.name, got, want)
		}
	}
	if e.foreign != "" {
		if got := e.nft("list", "table", "inet", "other"); got != e.foreign {
			e.t.Errorf("foreign table changed:\n%s\nwant:\n%s", got, e.foreign)
		}
	}
	if ok, reason := e.check(r); !ok {
		e.t.Errorf("Check after Apply: not ok: %s", reason)
	}
}

func (e *nftEnv) ruleset() string {
	e.t.Helper()
	return e.nft("list", "ruleset")
}

// stamp returns the tables with rule handles: a rewrite gives new ones.
func (e *nftEnv) stamp() string { return e.stamped() }

func (e *nftEnv) stamped() string {
	e.t.Helper()
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

func (e *nftEnv) tampers() []tamper {
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
	var out []tamper
	for _, tt := range tests {
		out = append(out, tamper{tt.name, func() {
			for _, args := range tt.tamper() {
				e.nft(args...)
			}
		}})
	}
	return out
}
