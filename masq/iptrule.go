package masq

import (
	"fmt"
	"net/netip"
	"strings"
)

// Names of the chains and the comments on the jumps to them. The chain
// names are flannel's; the comments mark the jumps as netagent's.
const (
	ChainPostrouting = "FLANNEL-POSTRTG"
	ChainForward     = "FLANNEL-FWD"
)

// iptChain is one of the manager's chains and the built-in chain that
// jumps to it.
type iptChain struct {
	table, hook, name, comment string
}

var (
	natChain = iptChain{table: "nat", hook: "POSTROUTING", name: ChainPostrouting, comment: "netagent masq"}
	fwdChain = iptChain{table: "filter", hook: "FORWARD", name: ChainForward, comment: "netagent forward"}
)

// jump is the canonical form of the rule in c.hook that jumps to c.name.
func (c iptChain) jump() string {
	return canonicalRule([]string{"-m", "comment", "--comment", c.comment, "-j", c.name})
}

// natRules are the canonical rules of FLANNEL-POSTRTG for f, in order.
func natRules(f family, randomFully bool) []string {
	n, s, mc := f.network.String(), f.subnet.String(), f.multicast().String()
	masq := []string{"-j", "MASQUERADE"}
	if randomFully {
		masq = append(masq, "--random-fully")
	}
	rules := [][]string{
		{"-m", "mark", "--mark", "0x4000/0x4000", "-j", "RETURN"},
		{"-s", s, "-d", n, "-j", "RETURN"},
		{"-s", n, "-d", s, "-j", "RETURN"},
		{"!", "-s", n, "-d", s, "-j", "RETURN"},
		append([]string{"-s", n, "!", "-d", mc}, masq...),
		append([]string{"!", "-s", n, "-d", n}, masq...),
	}
	return canonicalRules(rules)
}

// forwardRules are the canonical rules of FLANNEL-FWD for f, in order.
func forwardRules(f family) []string {
	n := f.network.String()
	return canonicalRules([][]string{
		{"-s", n, "-j", "ACCEPT"},
		{"-d", n, "-j", "ACCEPT"},
	})
}

func canonicalRules(rules [][]string) []string {
	out := make([]string, len(rules))
	for i, r := range rules {
		out[i] = canonicalRule(r)
	}
	return out
}

// canonicalRule renders a rule specification (without "-A CHAIN") in one
// canonical form, so that what `iptables -S` prints and what the manager
// generates compare equal when they mean the same: addresses are masked
// prefixes, tokens are separated by one space and quoted only when needed.
// The result is valid in an iptables-restore file.
func canonicalRule(tokens []string) string {
	out := make([]string, len(tokens))
	for i, t := range tokens {
		if i > 0 && isAddrOption(tokens[i-1]) {
			t = canonicalAddr(t)
		}
		out[i] = quoteToken(t)
	}
	return strings.Join(out, " ")
}

func isAddrOption(opt string) bool {
	switch opt {
	case "-s", "--source", "--src", "-d", "--destination", "--dst":
		return true
	}
	return false
}

// canonicalAddr renders an address or prefix as a masked prefix, as
// `iptables -S` prints it (10.5.0.1 → 10.5.0.1/32, 10.5.1.1/16 →
// 10.5.0.0/16). Anything else is returned as it is.
func canonicalAddr(s string) string {
	if p, err := netip.ParsePrefix(s); err == nil {
		return p.Masked().String()
	}
	if a, err := netip.ParseAddr(s); err == nil {
		return netip.PrefixFrom(a, a.BitLen()).String()
	}
	return s
}

func quoteToken(t string) string {
	if t != "" && !strings.ContainsAny(t, " \t\"\\'") {
		return t
	}
	r := strings.NewReplacer(`\`, `\\`, `"`, `\"`)
	return `"` + r.Replace(t) + `"`
}

// splitRule splits one line of `iptables -S` output into tokens, undoing
// the double quotes iptables puts around arguments with spaces.
func splitRule(line string) ([]string, error) {
	var (
		tokens  []string
		cur     strings.Builder
		inToken bool
		quoted  bool
	)
	for i := 0; i < len(line); i++ {
		c := line[i]
		switch {
		case quoted && c == '\\' && i+1 < len(line):
			i++
			cur.WriteByte(line[i])
		case quoted && c == '"':
			quoted = false
		case quoted:
			cur.WriteByte(c)
		case c == '"':
			quoted, inToken = true, true
		case c == ' ' || c == '\t':
			if inToken {
				tokens = append(tokens, cur.String())
				cur.Reset()
				inToken = false
			}
		default:
			cur.WriteByte(c)
			inToken = true
		}
	}
	if quoted {
		return nil, fmt.Errorf("masq: unterminated quote in rule %q", line)
	}
	if inToken {
		tokens = append(tokens, cur.String())
	}
	return tokens, nil
}

// chainListing is what `iptables -t TABLE -S CHAIN` says about one chain.
type chainListing struct {
	exists bool
	rules  []string // canonical, in order, without "-A CHAIN"
}

// parseListing parses the output lines of `iptables -t TABLE -S CHAIN`.
// Counters that iptables-nft may print are dropped.
func parseListing(chain string, lines []string) (chainListing, error) {
	var l chainListing
	for _, line := range lines {
		line = strings.TrimSpace(line)
		if line == "" {
			continue
		}
		tokens, err := splitRule(line)
		if err != nil {
			return chainListing{}, err
		}
		if len(tokens) < 2 || tokens[1] != chain {
			continue
		}
		switch tokens[0] {
		case "-N", "-P":
			l.exists = true
		case "-A":
			l.exists = true
			l.rules = append(l.rules, canonicalRule(dropCounters(tokens[2:])))
		}
	}
	return l, nil
}

// dropCounters removes a "-c PKTS BYTES" option (go-iptables turns the
// "[PKTS:BYTES]" prefix of iptables-nft into one).
func dropCounters(tokens []string) []string {
	for i := 0; i+2 < len(tokens); i++ {
		if tokens[i] == "-c" || tokens[i] == "--set-counters" {
			return append(append([]string(nil), tokens[:i]...), tokens[i+3:]...)
		}
	}
	return tokens
}

// jumpsTo reports whether the canonical rule jumps (or goes) to chain.
func jumpsTo(rule, chain string) bool {
	tokens, err := splitRule(rule)
	if err != nil {
		return false
	}
	for i := 0; i+1 < len(tokens); i++ {
		switch tokens[i] {
		case "-j", "--jump", "-g", "--goto":
			if tokens[i+1] == chain {
				return true
			}
		}
	}
	return false
}
