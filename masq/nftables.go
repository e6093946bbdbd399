package masq

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os/exec"
	"strconv"
	"strings"
	"sync"
)

// NFTable is the name of the manager's nftables tables, one per family
// (`table ip netagent`, `table ip6 netagent`).
const NFTable = "netagent"

// NFTables is the nftables Manager. It owns the tables `ip netagent` and
// `ip6 netagent`, each with a base chain `postrouting` (type nat hook
// postrouting priority srcnat) and a base chain `forward` (type filter hook
// forward priority filter) holding the rules of the package doc.
//
// One table per family rather than one inet table mirrors iptables and
// ip6tables: a family switched off is one table deleted, and NAT in an ip
// or ip6 table needs no kernel newer than 4.x (inet NAT needs 5.2).
//
// Apply lists each table (`nft list table ip netagent`) and, when it differs
// from the desired one, replaces it in one `nft -f -` transaction: "table
// ip netagent" (creates it if missing), "delete table ip netagent", then the
// whole table. The kernel commits that atomically, so the old rules apply
// until the new ones do.
//
// An accept in the forward chain does not override a drop in another base
// chain of the same hook (an iptables FORWARD policy DROP, say): nftables
// runs every base chain.
type NFTables struct {
	log         *slog.Logger
	mu          sync.Mutex // serialises Apply and Remove
	nft         string     // path of nft
	table       string     // Names.Table
	fullyRandom bool
}

// NFTablesOption configures NewNFTables.
type NFTablesOption func(*NFTables)

// WithTable names the manager's tables (default: NFTable).
func WithTable(name string) NFTablesOption {
	return func(m *NFTables) { m.table = name }
}

// NewNFTables returns an nftables Manager. It fails when nft is missing or
// cannot program NAT; it checks (with `nft --check`, which commits
// nothing) that masquerade fully-random is supported, else masquerades
// without it after a warning.
func NewNFTables(log *slog.Logger, opts ...NFTablesOption) (*NFTables, error) {
	path, err := exec.LookPath("nft")
	if err != nil {
		return nil, fmt.Errorf("masq: %w", err)
	}
	m := &NFTables{log: log, nft: path, table: NFTable, fullyRandom: true}
	for _, o := range opts {
		o(m)
	}
	ctx := context.Background()
	if err := m.run(ctx, probeText(true), "--check"); err != nil {
		if err2 := m.run(ctx, probeText(false), "--check"); err2 != nil {
			return nil, fmt.Errorf("masq: nft cannot masquerade: %w", err2)
		}
		log.Warn("nftables does not support masquerade fully-random: masquerading without it", "err", err)
		m.fullyRandom = false
	}
	return m, nil
}

func probeText(fullyRandom bool) string {
	masq := "masquerade"
	if fullyRandom {
		masq += " fully-random"
	}
	return "table ip " + NFTable + "_probe {\nchain p {\ntype nat hook postrouting priority 100; policy accept;\n" + masq + "\n}\n}\n"
}

// nftFamilies are the nftables families, in the order of Rules.families.
var nftFamilies = [2]string{"ip", "ip6"}

// Apply implements Manager.
func (m *NFTables) Apply(ctx context.Context, r Rules) error {
	_, err := m.apply(ctx, r)
	return err
}

// apply is Apply, returning the changes it made.
func (m *NFTables) apply(ctx context.Context, r Rules) ([]string, error) {
	return applyLocked(ctx, &m.mu, r, m.sync)
}

// Remove implements Manager.
func (m *NFTables) Remove(ctx context.Context) error {
	_, err := m.apply(ctx, Rules{})
	return err
}

// Check implements Manager.
func (m *NFTables) Check(ctx context.Context, r Rules) (bool, string, error) {
	v4, v6, err := r.families()
	if err != nil {
		return false, "", err
	}
	input, changes, err := m.plan(ctx, [2]family{v4, v6})
	if err != nil {
		return false, "", err
	}
	return input == "", strings.Join(changes, "; "), nil
}

// sync brings both tables to the desired state; the caller holds m.mu.
func (m *NFTables) sync(ctx context.Context, want [2]family) ([]string, error) {
	input, changes, err := m.plan(ctx, want)
	if err != nil || input == "" {
		return nil, err
	}
	if err := m.run(ctx, input); err != nil {
		return nil, err
	}
	for _, c := range changes {
		m.log.Info("masquerade rules changed", "backend", "nftables", "change", c)
	}
	return changes, nil
}

// plan returns the nft input that brings both tables to want, and a
// description of each change; input is empty when nothing differs.
func (m *NFTables) plan(ctx context.Context, want [2]family) (input string, changes []string, err error) {
	var b strings.Builder
	for i, fam := range nftFamilies {
		have, present, err := m.list(ctx, fam)
		if err != nil {
			return "", nil, err
		}
		table := "table " + fam + " " + m.table
		if !want[i].want {
			if present {
				b.WriteString("delete " + table + "\n")
				changes = append(changes, "delete "+table)
			}
			continue
		}
		desired := nftTableLines(fam, m.table, want[i], m.fullyRandom)
		var d string
		if !present {
			d = "missing"
		} else {
			d = diffLines(normalizeNFT(have), desired)
		}
		if d == "" {
			continue
		}
		fmt.Fprintf(&b, "%s\ndelete %s\n%s\n", table, table, strings.Join(desired, "\n"))
		changes = append(changes, table+": "+d)
	}
	return b.String(), changes, nil
}

// list returns the listing of the family's table, and whether it exists.
// Equivalent to: `nft list table ip netagent`.
func (m *NFTables) list(ctx context.Context, fam string) (string, bool, error) {
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, m.nft, "list", "table", fam, m.table)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) && strings.Contains(stderr.String(), "No such file or directory") {
			return "", false, nil
		}
		return "", false, fmt.Errorf("masq: nft list table %s %s: %w: %s", fam, m.table, err, bytes.TrimSpace(stderr.Bytes()))
	}
	return stdout.String(), true, nil
}

// run feeds input to nft. Equivalent to: `nft [args] -f - <input`.
func (m *NFTables) run(ctx context.Context, input string, args ...string) error {
	cmd := exec.CommandContext(ctx, m.nft, append(args, "-f", "-")...)
	cmd.Stdin = strings.NewReader(input)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("masq: nft %s-f -: %w: %s\ninput:\n%s", strings.Join(append(args, ""), " "), err, bytes.TrimSpace(out), input)
	}
	return nil
}

// nftTableLines is the desired table of fam ("ip" or "ip6") for f, in the
// normalised form of normalizeNFT; it is also valid nft input.
func nftTableLines(fam, table string, f family, fullyRandom bool) []string {
	n, s, mc := f.network.String(), f.subnet.String(), f.multicast().String()
	masq := "masquerade"
	if fullyRandom {
		masq += " fully-random"
	}
	return []string{
		"table " + fam + " " + table + " {",
		"chain postrouting {",
		"type nat hook postrouting priority 100; policy accept;",
		"meta mark & 0x4000 == 0x4000 return",
		fmt.Sprintf("%s saddr %s %s daddr %s return", fam, s, fam, n),
		fmt.Sprintf("%s saddr %s %s daddr %s return", fam, n, fam, s),
		fmt.Sprintf("%s saddr != %s %s daddr %s return", fam, n, fam, s),
		fmt.Sprintf("%s saddr %s %s daddr != %s %s", fam, n, fam, mc, masq),
		fmt.Sprintf("%s saddr != %s %s daddr %s %s", fam, n, fam, n, masq),
		"}",
		"chain forward {",
		"type filter hook forward priority 0; policy accept;",
		fmt.Sprintf("%s saddr %s accept", fam, n),
		fmt.Sprintf("%s daddr %s accept", fam, n),
		"}",
		"}",
	}
}

// normalizeNFT turns `nft list table` output into lines comparable with
// nftTableLines: comments (handles) and blank lines dropped, whitespace
// collapsed, hexadecimal numbers without leading zeros, and the standard
// priority names (printed by nft 0.9.6 and later) as numbers.
func normalizeNFT(listing string) []string {
	var out []string
	for _, line := range strings.Split(listing, "\n") {
		if i := strings.IndexByte(line, '#'); i >= 0 {
			line = line[:i]
		}
		fields := strings.Fields(line)
		if len(fields) == 0 {
			continue
		}
		for i, f := range fields {
			fields[i] = normalizeNFTToken(f)
		}
		out = append(out, strings.Join(fields, " "))
	}
	return out
}

func normalizeNFTToken(t string) string {
	switch t {
	case "srcnat;":
		return "100;"
	case "filter;":
		return "0;"
	}
	if len(t) > 2 && (t[:2] == "0x" || t[:2] == "0X") {
		if v, err := strconv.ParseUint(t[2:], 16, 64); err == nil {
			return "0x" + strconv.FormatUint(v, 16)
		}
	}
	return t
}

// diffLines describes how have differs from want, or returns "".
func diffLines(have, want []string) string {
	return diffSeq("line", have, want)
}
