package masq

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os/exec"
	"strings"
	"sync"

	"github.com/coreos/go-iptables/iptables"
)

// IPTablesMode selects the iptables variant a manager runs.
type IPTablesMode string

const (
	// IPTablesDefault runs `iptables` and `iptables-restore` as found in
	// PATH, whichever backend they are (Debian's alternatives decide).
	IPTablesDefault IPTablesMode = ""
	// IPTablesNFT runs iptables-nft and iptables-nft-restore.
	IPTablesNFT IPTablesMode = "nft"
	// IPTablesLegacy runs iptables-legacy and iptables-legacy-restore.
	IPTablesLegacy IPTablesMode = "legacy"
)

// IPTablesOption configures NewIPTables.
type IPTablesOption func(*iptablesConfig)

type iptablesConfig struct {
	mode  IPTablesMode
	names *Names
}

// WithChains names the manager's chains (default: DefaultNames).
func WithChains(n Names) IPTablesOption {
	return func(c *iptablesConfig) { c.names = &n }
}

// WithIPTablesMode selects the iptables variant; the default is
// IPTablesDefault.
func WithIPTablesMode(mode IPTablesMode) IPTablesOption {
	return func(c *iptablesConfig) { c.mode = mode }
}

// lockWaitSeconds is how long iptables waits for the xtables lock that
// other programs (kube-proxy, docker) may hold.
const lockWaitSeconds = "5"

// IPTables is the iptables Manager: chains FLANNEL-POSTRTG (nat) and
// FLANNEL-FWD (filter), each jumped to from the top of POSTROUTING and
// FORWARD, for IPv4 with iptables and IPv6 with ip6tables.
//
// Apply reads the chains with `iptables -t TABLE -S CHAIN` and, when they
// differ from the desired rules, writes them with `iptables-restore
// --noflush`, declaring only its own chain: that replaces the chain's
// content and fixes the jumps in one commit per table, leaving every other
// chain as it is.
//
// A missing jump is inserted at the top of the built-in chain, as
// kube-proxy does for its own, so that the cluster's rules (the RETURN
// rules for traffic inside the cluster network in particular) apply before
// generic rules a host may have, such as a MASQUERADE of everything leaving
// an interface or a DROP policy in FORWARD. A jump already present stays
// where it is, wherever others have since inserted their rules: moving it
// back to the top on each resync would fight other programs that insert
// their jumps first. The order against kube-proxy's KUBE-POSTROUTING does
// not matter: packets with its mark 0x4000 are returned by FLANNEL-POSTRTG
// and masqueraded by KUBE-POSTROUTING, and it returns all others. Any other
// jump to the chain (flannel's "flanneld masq", a duplicate) is deleted.
type IPTables struct {
	log    *slog.Logger
	mu     sync.Mutex // serialises Apply and Remove
	v4, v6 *iptFamily
	v6err  error // why v6 is nil
}

// iptFamily runs one of iptables and ip6tables.
type iptFamily struct {
	name        string // "ipv4", "ipv6"
	ipt         *iptables.IPTables
	restore     string   // path of the matching iptables-restore
	restoreArgs []string // --noflush and the lock wait
	mode        string   // "nf_tables" or "legacy"
	randomFully bool
	nat, fwd    iptChain
}

// NewIPTables returns an iptables Manager. It fails when iptables is not
// usable; when only ip6tables is missing, Apply fails for rules with IPv6.
// --random-fully is used when iptables supports it (1.6.2 and later), else
// plain MASQUERADE with a warning.
func NewIPTables(log *slog.Logger, opts ...IPTablesOption) (*IPTables, error) {
	var cfg iptablesConfig
	for _, o := range opts {
		o(&cfg)
	}
	names := DefaultNames()
	if cfg.names != nil {
		names = *cfg.names
	}
	v4, err := newIPTFamily(log, iptables.ProtocolIPv4, cfg.mode, names)
	if err != nil {
		return nil, err
	}
	m := &IPTables{log: log, v4: v4}
	m.v6, m.v6err = newIPTFamily(log, iptables.ProtocolIPv6, cfg.mode, names)
	if m.v6err != nil {
		log.Warn("ip6tables is not usable: IPv6 masquerade rules cannot be applied", "err", m.v6err)
	}
	return m, nil
}

// Mode is the iptables backend in use: "nf_tables" or "legacy".
func (m *IPTables) Mode() string { return m.v4.mode }

func newIPTFamily(log *slog.Logger, proto iptables.Protocol, mode IPTablesMode, names Names) (*iptFamily, error) {
	base, name := "iptables", "ipv4"
	if proto == iptables.ProtocolIPv6 {
		base, name = "ip6tables", "ipv6"
	}
	switch mode {
	case IPTablesDefault:
	case IPTablesNFT, IPTablesLegacy:
		base += "-" + string(mode)
	default:
		return nil, fmt.Errorf("masq: unknown iptables mode %q", mode)
	}
	ipt, err := iptables.New(iptables.IPFamily(proto), iptables.Path(base), iptables.Timeout(5))
	if err != nil {
		return nil, fmt.Errorf("masq: %s: %w", base, err)
	}
	restore, err := exec.LookPath(base + "-restore")
	if err != nil {
		return nil, fmt.Errorf("masq: %w", err)
	}
	mainMode, err := xtablesMode(base)
	if err != nil {
		return nil, err
	}
	restoreMode, err := xtablesMode(restore)
	if err != nil {
		return nil, err
	}
	if mainMode != restoreMode {
		return nil, fmt.Errorf("masq: %s is %s but %s is %s: both must use one backend", base, mainMode, restore, restoreMode)
	}
	f := &iptFamily{
		name:        name,
		ipt:         ipt,
		restore:     restore,
		restoreArgs: []string{"--noflush"},
		mode:        mainMode,
		randomFully: ipt.HasRandomFully(),
	}
	f.nat, f.fwd = names.chains()
	// iptables-restore waits for the xtables lock since 1.6.2, the
	// version that also brought --random-fully.
	if f.randomFully {
		f.restoreArgs = append(f.restoreArgs, "--wait", lockWaitSeconds)
	} else {
		v1, v2, v3 := ipt.GetIptablesVersion()
		log.Warn("iptables does not support MASQUERADE --random-fully: masquerading without it",
			"family", name, "version", fmt.Sprintf("%d.%d.%d", v1, v2, v3))
	}
	return f, nil
}

// xtablesMode runs `cmd --version` and returns the backend it reports:
// "nf_tables" or "legacy" (versions before 1.8 report none: legacy).
func xtablesMode(cmd string) (string, error) {
	out, err := exec.Command(cmd, "--version").CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("masq: %s --version: %w: %s", cmd, err, bytes.TrimSpace(out))
	}
	if strings.Contains(string(out), "nf_tables") {
		return "nf_tables", nil
	}
	return "legacy", nil
}

// Apply implements Manager.
func (m *IPTables) Apply(ctx context.Context, r Rules) error {
	_, err := m.apply(ctx, r)
	return err
}

// apply is Apply, returning the changes it made.
func (m *IPTables) apply(ctx context.Context, r Rules) ([]string, error) {
	return applyLocked(ctx, &m.mu, r, m.sync)
}

// Remove implements Manager.
func (m *IPTables) Remove(ctx context.Context) error {
	_, err := m.apply(ctx, Rules{})
	return err
}

// Check implements Manager.
func (m *IPTables) Check(ctx context.Context, r Rules) (bool, string, error) {
	v4, v6, err := r.families()
	if err != nil {
		return false, "", err
	}
	var reasons []string
	for _, p := range m.pairs(v4, v6) {
		if p.f == nil {
			if p.want.want {
				return false, "", p.err
			}
			continue
		}
		input, changes, err := p.f.plan(p.want)
		if err != nil {
			return false, "", err
		}
		if input != "" {
			reasons = append(reasons, p.f.name+": "+strings.Join(changes, "; "))
		}
	}
	return len(reasons) == 0, strings.Join(reasons, "; "), nil
}

// iptPair is a family's runner and its desired state.
type iptPair struct {
	f    *iptFamily
	want family
	err  error // why f is nil
}

func (m *IPTables) pairs(v4, v6 family) []iptPair {
	p := []iptPair{{f: m.v4, want: v4}, {f: m.v6, want: v6}}
	if m.v6 == nil {
		p[1].err = fmt.Errorf("masq: ip6tables unavailable: %w", m.v6err)
	}
	return p
}

// sync brings both families to the desired state; the caller holds m.mu.
func (m *IPTables) sync(ctx context.Context, want [2]family) ([]string, error) {
	var (
		all  []string
		errs []error
	)
	for _, p := range m.pairs(want[0], want[1]) {
		if p.f == nil {
			if p.want.want {
				errs = append(errs, p.err)
			}
			continue
		}
		input, changes, err := p.f.plan(p.want)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if input == "" {
			continue
		}
		if err := p.f.runRestore(ctx, input); err != nil {
			errs = append(errs, err)
			continue
		}
		for _, c := range changes {
			m.log.Info("masquerade rules changed", "backend", "iptables", "family", p.f.name, "change", c)
		}
		all = append(all, changes...)
	}
	return all, errors.Join(errs...)
}

// plan returns the iptables-restore input that brings the family's chains
// to want (want.want false: removed) and a description of each change it
// makes; input is empty when nothing differs.
func (f *iptFamily) plan(want family) (input string, changes []string, err error) {
	var b strings.Builder
	for _, c := range []struct {
		chain iptChain
		rules []string
	}{
		{f.nat, natRules(want, f.randomFully)},
		{f.fwd, forwardRules(want)},
	} {
		if !want.want {
			c.rules = nil
		}
		lines, ch, err := f.planChain(c.chain, want.want, c.rules)
		if err != nil {
			return "", nil, err
		}
		if len(lines) == 0 {
			continue
		}
		fmt.Fprintf(&b, "*%s\n%s\nCOMMIT\n", c.chain.table, strings.Join(lines, "\n"))
		changes = append(changes, ch...)
	}
	return b.String(), changes, nil
}

// planChain returns the iptables-restore lines (inside the table section)
// that bring c to hold rules, jumped to once from its hook, or (want false)
// remove it and every jump to it.
func (f *iptFamily) planChain(c iptChain, want bool, rules []string) (lines, changes []string, err error) {
	own, err := f.list(c.table, c.name, true)
	if err != nil {
		return nil, nil, err
	}
	if !want && !own.exists {
		// Nothing can jump to a chain that does not exist.
		return nil, nil, nil
	}
	hook, err := f.list(c.table, c.hook, false)
	if err != nil {
		return nil, nil, err
	}
	var jumps []string
	for _, r := range hook.rules {
		if jumpsTo(r, c.name) {
			jumps = append(jumps, r)
		}
	}
	if !want {
		for _, j := range jumps {
			lines = append(lines, "-D "+c.hook+" "+j)
			changes = append(changes, fmt.Sprintf("%s %s: delete jump %q", c.table, c.hook, j))
		}
		// Declaring the chain flushes it; then it can be deleted.
		lines = append(lines, ":"+c.name+" - [0:0]", "-X "+c.name)
		changes = append(changes, fmt.Sprintf("%s: delete chain %s", c.table, c.name))
		return lines, changes, nil
	}
	if d := diffRules(own, rules); d != "" {
		// Declaring the chain with --noflush replaces its content in the
		// table's commit.
		lines = append(lines, ":"+c.name+" - [0:0]")
		for _, r := range rules {
			lines = append(lines, "-A "+c.name+" "+r)
		}
		changes = append(changes, fmt.Sprintf("%s %s: %s", c.table, c.name, d))
	}
	wantJump := c.jump()
	ours := 0
	for _, j := range jumps {
		if j == wantJump {
			ours++
			continue
		}
		lines = append(lines, "-D "+c.hook+" "+j)
		changes = append(changes, fmt.Sprintf("%s %s: delete other jump %q", c.table, c.hook, j))
	}
	switch {
	case ours == 0:
		lines = append(lines, "-I "+c.hook+" 1 "+wantJump)
		changes = append(changes, fmt.Sprintf("%s %s: insert jump to %s", c.table, c.hook, c.name))
	case ours > 1:
		// Deleting by specification deletes the first match: delete them
		// all, then insert one at the top again, in the same commit.
		for range ours {
			lines = append(lines, "-D "+c.hook+" "+wantJump)
		}
		lines = append(lines, "-I "+c.hook+" 1 "+wantJump)
		changes = append(changes, fmt.Sprintf("%s %s: replace %d jumps to %s with one at the top", c.table, c.hook, ours, c.name))
	}
	return lines, changes, nil
}

// diffRules describes how the chain differs from want, or returns "".
func diffRules(have chainListing, want []string) string {
	if !have.exists {
		return "chain missing"
	}
	return diffSeq("rule", have.rules, want)
}

// list reads one chain. Equivalent to: `iptables -t TABLE -S CHAIN`. A
// missing chain is an error unless mayBeMissing.
func (f *iptFamily) list(table, chain string, mayBeMissing bool) (chainListing, error) {
	lines, err := f.ipt.List(table, chain)
	if err != nil {
		// iptables exits with 1 for a missing chain, with a message that
		// differs between its backends (go-iptables' ChainExists relies on
		// the same), and with 3 when the table itself cannot exist (legacy
		// ip6tables on a kernel without IPv6 NAT): no chain there either.
		var e *iptables.Error
		if mayBeMissing && errors.As(err, &e) && (e.ExitStatus() == 1 || e.ExitStatus() == 3) {
			return chainListing{}, nil
		}
		return chainListing{}, fmt.Errorf("masq: list %s %s: %w", table, chain, err)
	}
	l, err := parseListing(chain, lines)
	if err != nil {
		return chainListing{}, fmt.Errorf("masq: list %s %s: %w", table, chain, err)
	}
	return l, nil
}

// runRestore commits input. Equivalent to: `iptables-restore --noflush
// --wait 5 <input`.
func (f *iptFamily) runRestore(ctx context.Context, input string) error {
	cmd := exec.CommandContext(ctx, f.restore, f.restoreArgs...)
	cmd.Stdin = strings.NewReader(input)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("masq: %s %s: %w: %s\ninput:\n%s", f.restore, strings.Join(f.restoreArgs, " "), err, bytes.TrimSpace(out), input)
	}
	return nil
}
