package masq

import (
	"fmt"
	"net/netip"
	"regexp"
	"strings"
	"testing"
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

// wantPostrtg is the chain of docs/compatibility.md §7.1 for network n and subnet s, as
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

// iptEnv is the backendEnv of iptables in one mode.
type iptEnv struct {
	*mgrEnv
	mode IPTablesMode
	// foreign are others' rules in the hooks after the jumps, as
	// `iptables -S` prints them, per hook ("POSTROUTING") for IPv4 and per
	// "ip6 " and hook for IPv6.
	foreign map[string][]string
}

func newIPTEnv(t *testing.T, mode IPTablesMode) *iptEnv {
	t.Helper()
	requireCmd(t, iptCmd(mode, false), iptCmd(mode, false)+"-restore", iptCmd(mode, true), iptCmd(mode, true)+"-restore")
	guardRoot(t)
	return &iptEnv{mode: mode, mgrEnv: newMgrEnv(t, func(t *testing.T) (testManager, error) {
		return NewIPTables(testLogger(t), WithIPTablesMode(mode))
	})}
}

func (e *iptEnv) env() *mgrEnv { return e.mgrEnv }

// ipt runs iptables (or ip6tables) of the env's mode in its namespace.
func (e *iptEnv) ipt(v6 bool, args ...string) string {
	e.t.Helper()
	return e.n.sh(e.t, append([]string{iptCmd(e.mode, v6)}, args...)...)
}

func (e *iptEnv) addForeign() {
	e.t.Helper()
	e.ipt(false, "-t", "nat", "-N", "OTHER")
	e.ipt(false, "-t", "nat", "-A", "OTHER", "-s", "10.5.0.0/16", "-j", "RETURN")
	e.ipt(false, "-t", "nat", "-A", "POSTROUTING", "-s", "192.168.5.0/24", "-j", "MASQUERADE")
	e.ipt(false, "-t", "nat", "-A", "POSTROUTING", "-j", "OTHER")
	e.ipt(false, "-t", "filter", "-A", "FORWARD", "-i", "eth9", "-j", "DROP")
	e.ipt(false, "-t", "filter", "-A", "FORWARD", "-o", "eth9", "-j", "ACCEPT")
	e.ipt(true, "-t", "filter", "-A", "FORWARD", "-s", "fd00:5::/48", "-j", "ACCEPT")
	e.ipt(true, "-t", "nat", "-A", "POSTROUTING", "-o", "eth9", "-j", "MASQUERADE")
	e.foreign = map[string][]string{
		"POSTROUTING":     {"-A POSTROUTING -s 192.168.5.0/24 -j MASQUERADE", "-A POSTROUTING -j OTHER"},
		"FORWARD":         {"-A FORWARD -i eth9 -j DROP", "-A FORWARD -o eth9 -j ACCEPT"},
		"ip6 POSTROUTING": {"-A POSTROUTING -o eth9 -j MASQUERADE"},
		"ip6 FORWARD":     {"-A FORWARD -s fd00:5::/48 -j ACCEPT"},
	}
}

// jumpLine is the rule iptables -S prints for the jump to chain.
func jumpLine(hook, comment, chain string) string {
	return fmt.Sprintf(`-A %s -m comment --comment "%s" -j %s`, hook, comment, chain)
}

// assertRules checks that the namespace holds exactly r's chains, or
// none of ours for a family r leaves unset, with the jumps first in
// POSTROUTING and FORWARD followed by the foreign rules.
func (e *iptEnv) assertRules(r Rules) {
	e.t.Helper()
	for _, fam := range []struct {
		v6   bool
		n, s netip.Prefix
	}{{false, r.Network, r.Subnet}, {true, r.IPv6Network, r.IPv6Subnet}} {
		if !fam.n.IsValid() {
			for _, table := range []string{"nat", "filter"} {
				if got := e.ipt(fam.v6, "-t", table, "-S"); strings.Contains(got, "FLANNEL") {
					e.t.Errorf("v6=%v %s with no rules for the family:\n%s", fam.v6, table, got)
				}
			}
		} else {
			if got := e.ipt(fam.v6, "-t", "nat", "-S", ChainPostrouting); got != wantPostrtg(fam.n, fam.s) {
				e.t.Errorf("v6=%v nat %s:\n%s\nwant:\n%s", fam.v6, ChainPostrouting, got, wantPostrtg(fam.n, fam.s))
			}
			if got := e.ipt(fam.v6, "-t", "filter", "-S", ChainForward); got != wantFwd(fam.n) {
				e.t.Errorf("v6=%v filter %s:\n%s\nwant:\n%s", fam.v6, ChainForward, got, wantFwd(fam.n))
			}
		}
		for _, h := range []struct{ table, hook, policy, comment, chain string }{
			{"nat", "POSTROUTING", "ACCEPT", "netagent masq", ChainPostrouting},
			{"filter", "FORWARD", "ACCEPT", "netagent forward", ChainForward},
		} {
			want := []string{"-P " + h.hook + " " + h.policy}
			if fam.n.IsValid() {
				want = append(want, jumpLine(h.hook, h.comment, h.chain))
			}
			key := h.hook
			if fam.v6 {
				key = "ip6 " + key
			}
			want = append(want, e.foreign[key]...)
			if got := e.ipt(fam.v6, "-t", h.table, "-S", h.hook); got != strings.Join(want, "\n")+"\n" {
				e.t.Errorf("v6=%v %s %s:\n%s\nwant:\n%s", fam.v6, h.table, h.hook, got, strings.Join(want, "\n"))
			}
		}
	}
	if ok, reason := e.check(r); !ok {
		e.t.Errorf("Check after Apply: not ok: %s", reason)
	}
}

// ruleset is iptables-save and ip6tables-save of the env's mode, without
// comments (timestamps) and counters.
func (e *iptEnv) ruleset() string {
	e.t.Helper()
	return strip(e.n.sh(e.t, iptCmd(e.mode, false)+"-save") + e.n.sh(e.t, iptCmd(e.mode, true)+"-save"))
}

var countersRe = regexp.MustCompile(`\[(\d+):(\d+)\] -A FLANNEL-POSTRTG -m mark`)

// stamp sets the counters of the first rule of FLANNEL-POSTRTG, which a
// rewrite of the chain would reset.
func (e *iptEnv) stamp() string {
	e.ipt(false, "-t", "nat", "-R", ChainPostrouting, "1", "-c", "7", "700", "-m", "mark", "--mark", "0x4000/0x4000", "-j", "RETURN")
	return "7:700"
}

// stamped returns the counters of the first rule of FLANNEL-POSTRTG.
func (e *iptEnv) stamped() string {
	e.t.Helper()
	save := e.n.sh(e.t, iptCmd(e.mode, false)+"-save", "-c", "-t", "nat")
	m := countersRe.FindStringSubmatch(save)
	if m == nil {
		e.t.Fatalf("no counters for the mark rule in:\n%s", save)
	}
	return m[1] + ":" + m[2]
}

func (e *iptEnv) tampers() []tamper {
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
	var out []tamper
	for _, tt := range tests {
		out = append(out, tamper{tt.name, func() {
			for _, args := range tt.tamper {
				e.ipt(false, args...)
			}
		}})
	}
	return out
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
