package masq

import (
	"fmt"
	"regexp"
)

// Names are the names of a manager's iptables chains and nftables tables.
// Several agents on one host, one per overlay network, each keep their
// own rules under their own names (docs/compatibility.md §7.3); the
// default instance keeps flannel's.
type Names struct {
	// PostRouting and Forward are the iptables chains jumped to from
	// POSTROUTING (nat) and FORWARD (filter).
	PostRouting, Forward string
	// Table is the name of the nftables tables, one per family.
	Table string
}

// MaxChainName is the longest iptables chain name the kernel accepts
// (XT_EXTENSION_MAXNAMELEN less the terminating NUL).
const MaxChainName = 28

// DefaultNames are the names of the default instance: flannel's chains
// and the table `netagent`.
func DefaultNames() Names {
	return Names{PostRouting: ChainPostrouting, Forward: ChainForward, Table: NFTable}
}

var instanceIDRE = regexp.MustCompile(`^[a-z0-9]+$`)

// InstanceNames returns the names of the instance with id (lower-case
// letters and digits): DefaultNames for "", else FLANNEL-POSTRTG-<id>,
// FLANNEL-FWD-<id> and netagent_<id>. An id that would make a chain name
// longer than MaxChainName is refused.
func InstanceNames(id string) (Names, error) {
	if id == "" {
		return DefaultNames(), nil
	}
	if !instanceIDRE.MatchString(id) {
		return Names{}, fmt.Errorf("masq: instance id %q: want lower-case letters and digits", id)
	}
	n := Names{
		PostRouting: ChainPostrouting + "-" + id,
		Forward:     ChainForward + "-" + id,
		Table:       NFTable + "_" + id,
	}
	if len(n.PostRouting) > MaxChainName {
		return Names{}, fmt.Errorf("masq: instance id %q: chain %s is longer than %d characters", id, n.PostRouting, MaxChainName)
	}
	return n, nil
}

// chains are the iptables chains of n.
func (n Names) chains() (nat, fwd iptChain) {
	nat, fwd = natChain, fwdChain
	nat.name, fwd.name = n.PostRouting, n.Forward
	return nat, fwd
}
