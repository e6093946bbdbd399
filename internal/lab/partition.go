package lab

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"strings"
)

// partitionTable is the nftables table Partition adds; nothing else in a
// lab namespace uses it.
const partitionTable = "netagent_lab_partition"

// Partition cuts the lab namespace ns off from the given underlay
// addresses: every IPv4 packet ns sends to one of them, or receives from
// one, is dropped, silently, as a broken link would. Other traffic of ns
// (to other hosts, its containers' overlay traffic) is untouched. The rules
// live in an nftables table of ns itself; the initial namespace is never
// touched. Heal removes them. Partitioning again replaces the address set.
//
// Equivalent to: `ip netns exec NS nft -f -` with
// `table inet netagent_lab_partition { chain out { type filter hook output
// priority -300; ip daddr { ADDRS } drop }; chain in { type filter hook
// input priority -300; ip saddr { ADDRS } drop } }`.
func (l *Lab) Partition(ctx context.Context, ns string, addrs ...netip.Addr) error {
	if len(addrs) == 0 {
		return fmt.Errorf("lab: Partition %s: no address", ns)
	}
	var set []string
	for _, a := range addrs {
		if !a.Is4() {
			return fmt.Errorf("lab: Partition %s: %v is not an IPv4 address", ns, a)
		}
		set = append(set, a.String())
	}
	elems := strings.Join(set, ", ")
	if err := l.Heal(ctx, ns); err != nil {
		return err
	}
	script := fmt.Sprintf(`table inet %s {
	chain out {
		type filter hook output priority -300; policy accept;
		ip daddr { %s } drop
	}
	chain in {
		type filter hook input priority -300; policy accept;
		ip saddr { %s } drop
	}
}
`, partitionTable, elems, elems)
	f, err := os.CreateTemp(l.dir, "partition-*.nft")
	if err != nil {
		return fmt.Errorf("lab: %w", err)
	}
	defer os.Remove(f.Name())
	_, err = f.WriteString(script)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("lab: %w", err)
	}
	if _, err := l.Exec(ctx, ns, "nft", "-f", f.Name()); err != nil {
		return fmt.Errorf("lab: partition %s from %s: %w", ns, elems, err)
	}
	return nil
}

// Heal removes what Partition added in ns; a namespace that is not
// partitioned is left as it is.
//
// Equivalent to: `ip netns exec NS nft delete table inet netagent_lab_partition`.
func (l *Lab) Heal(ctx context.Context, ns string) error {
	out, err := l.Exec(ctx, ns, "nft", "list", "tables")
	if err != nil {
		return err
	}
	if !strings.Contains(string(out), "inet "+partitionTable) {
		return nil
	}
	_, err = l.Exec(ctx, ns, "nft", "delete", "table", "inet", partitionTable)
	return err
}
