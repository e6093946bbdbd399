package masq

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"sync"
)

// ErrInvalidRules is returned (wrapped) by Apply and Check for Rules that
// cannot be programmed, such as a lease outside its network.
var ErrInvalidRules = errors.New("masq: invalid rules")

// Rules is the desired masquerade and forwarding state.
type Rules struct {
	// Network is the IPv4 cluster network N and Subnet this host's lease S.
	// Both invalid (the zero Prefix) means no IPv4 rules: Apply removes any.
	Network, Subnet netip.Prefix
	// IPv6Network and IPv6Subnet are the same for IPv6.
	IPv6Network, IPv6Subnet netip.Prefix
}

// Manager programs Rules into the kernel, in the network namespace of the
// calling thread. Its methods may be called from several goroutines.
type Manager interface {
	// Apply makes the kernel hold exactly the rules r describes, in order.
	// It changes only what differs, each table in one atomic commit, so that
	// there is no moment where traffic is not masqueraded; calling it again
	// with the same r changes nothing. A family whose network is invalid in
	// r has its rules removed. Each change is logged.
	Apply(ctx context.Context, r Rules) error
	// Check reports whether the kernel holds exactly the rules r describes;
	// when it does not, reason says what differs. err is set only when the
	// state could not be read or r is invalid.
	Check(ctx context.Context, r Rules) (ok bool, reason string, err error)
	// Remove deletes everything the manager installs (jumps and chains, or
	// tables) and nothing else: used when masquerading is switched off.
	Remove(ctx context.Context) error
}

// family is the desired state of one address family; want is false when
// the family has no rules.
type family struct {
	want            bool
	network, subnet netip.Prefix
}

// multicast is the family's multicast range, never masqueraded.
func (f family) multicast() netip.Prefix {
	if f.network.Addr().Is4() {
		return netip.MustParsePrefix("224.0.0.0/4")
	}
	return netip.MustParsePrefix("ff00::/8")
}

// families validates r and splits it into its IPv4 and IPv6 parts.
func (r Rules) families() (v4, v6 family, err error) {
	v4, err4 := newFamily("IPv4", r.Network, r.Subnet, true)
	v6, err6 := newFamily("IPv6", r.IPv6Network, r.IPv6Subnet, false)
	return v4, v6, errors.Join(err4, err6)
}

func newFamily(name string, network, subnet netip.Prefix, is4 bool) (family, error) {
	if !network.IsValid() && !subnet.IsValid() {
		return family{}, nil
	}
	if !network.IsValid() || !subnet.IsValid() {
		return family{}, fmt.Errorf("%w: %s network %v and subnet %v must be both set or both unset", ErrInvalidRules, name, network, subnet)
	}
	if network.Addr().Is4() != is4 || subnet.Addr().Is4() != is4 || network.Addr().Is4In6() || subnet.Addr().Is4In6() {
		return family{}, fmt.Errorf("%w: %s network %v or subnet %v is of the wrong address family", ErrInvalidRules, name, network, subnet)
	}
	network, subnet = network.Masked(), subnet.Masked()
	if subnet.Bits() < network.Bits() || !network.Contains(subnet.Addr()) {
		return family{}, fmt.Errorf("%w: %s subnet %v is not inside network %v", ErrInvalidRules, name, subnet, network)
	}
	return family{want: true, network: network, subnet: subnet}, nil
}

// applyLocked validates r and, holding mu, brings the kernel to it with
// pass, which takes the IPv4 and IPv6 families and returns the changes it
// made: the common part of the Managers' Apply and (with Rules{}, every
// family off) Remove.
func applyLocked(ctx context.Context, mu *sync.Mutex, r Rules, pass func(context.Context, [2]family) ([]string, error)) ([]string, error) {
	v4, v6, err := r.families()
	if err != nil {
		return nil, err
	}
	mu.Lock()
	defer mu.Unlock()
	return pass(ctx, [2]family{v4, v6})
}

// diffSeq describes the first difference between have and want, naming
// their items noun ("rule", "line"), or returns "" when they are equal.
func diffSeq(noun string, have, want []string) string {
	for i := 0; i < len(have) || i < len(want); i++ {
		switch {
		case i >= len(have):
			return fmt.Sprintf("%s %d missing: want %q", noun, i+1, want[i])
		case i >= len(want):
			return fmt.Sprintf("%s %d is extra: %q", noun, i+1, have[i])
		case have[i] != want[i]:
			return fmt.Sprintf("%s %d is %q, want %q", noun, i+1, have[i], want[i])
		}
	}
	return ""
}
