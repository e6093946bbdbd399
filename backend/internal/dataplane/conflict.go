package dataplane

import (
	"cmp"
	"net/netip"
	"slices"

	"github.com/netagent/netagent/backend"
)

// claim is what one lease key asks of an engine: a subnet of its family
// and, when the backend has one, a backend identity (vxlan: the VTEP MAC).
// Two claims conflict when they name the same subnet, or the same
// identity with another public IP (keys of one host may share its
// identity: a host that moved to a reservation leaves its old lease until
// the TTL ends, with the same MAC); of two conflicting keys the one
// created first wins (docs/compatibility.md §3.8).
//
// A claim is the peer it makes when it wins (one struct, see peer): its
// key, subnet and public IP, the holder of its identity (claims of one
// identity and holder do not conflict), are the peer's.
type claim = peer

// claimFields are what a peer holds as a claim.
type claimFields struct {
	// rev is the key's create revision; the smaller wins, then the
	// smaller key.
	rev      int64
	identity string
	// form, when set, is why the key's form is refused (a subnet of a
	// family the config does not enable, another backend type): such a
	// claim never wins nor takes anything. formReason is its
	// backend.Refused* reason (empty: RefusedKeyForm); a refused key
	// form reports the key that holds its subnet.
	form       string
	formReason string

	// The decision: reason is empty when the claim wins, else a
	// backend.Refused* reason and winner the key it lost to ("" when
	// none holds the subnet, for a refused form).
	reason string
	winner string
}

// claims is the table of lease keys an engine knows, and who wins. Only
// the keys connected to a changed key by a shared subnet or identity are
// decided again; the outcome depends on the set of claims alone, not on
// the order they came in.
//
// bySubnet and byIdent list the claims of each subnet and identity: one,
// almost always (several only where keys contend), so a list, not a map
// per subnet: with 5,000 leases a map each was ~3 MB of the agent's heap.
type claims struct {
	byKey    map[string]*claim
	bySubnet map[netip.Prefix]claimList
	byIdent  map[string]claimList
}

func newClaims() *claims {
	return &claims{
		byKey:    make(map[string]*claim),
		bySubnet: make(map[netip.Prefix]claimList),
		byIdent:  make(map[string]claimList),
	}
}

// claimList is the claims of one subnet or identity, at most one per key,
// in no particular order.
type claimList []*claim

// without returns l without key's claim; nil when nothing is left.
func (l claimList) without(key string) claimList {
	l = slices.DeleteFunc(l, func(cl *claim) bool { return cl.key == key })
	if len(l) == 0 {
		return nil
	}
	return l
}

// get returns the claim of key, or nil.
func (c *claims) get(key string) *claim { return c.byKey[key] }

// winner returns the claim that holds subnet s, or nil.
func (c *claims) winner(s netip.Prefix) *claim {
	for _, cl := range c.bySubnet[s] {
		if cl.reason == "" {
			return cl
		}
	}
	return nil
}

// set puts cl in the table, replacing the claim of the same key (old,
// nil if none), and decides again; touched is every claim in the table
// whose decision may have changed.
func (c *claims) set(cl *claim) (old *claim, touched []*claim) {
	old = c.byKey[cl.key]
	c.unlink(old)
	c.byKey[cl.key] = cl
	c.link(cl)
	seeds := []*claim{cl}
	seeds = append(seeds, c.neighbours(old)...)
	return old, c.decide(seeds)
}

// replace puts nw in old's place in the table, decision and all: a copy
// of old made for a new route mode (the same key, subnet and identity).
func (c *claims) replace(old, nw *claim) {
	c.byKey[old.key] = nw
	swap := func(l claimList) {
		for i, cl := range l {
			if cl == old {
				l[i] = nw
			}
		}
	}
	swap(c.bySubnet[old.subnet])
	if old.identity != "" && old.form == "" {
		swap(c.byIdent[old.identity])
	}
}

// remove takes key's claim (old, nil if none) out of the table and decides
// again; touched is every claim whose decision may have changed.
func (c *claims) remove(key string) (old *claim, touched []*claim) {
	old = c.byKey[key]
	if old == nil {
		return nil, nil
	}
	c.unlink(old)
	delete(c.byKey, key)
	return old, c.decide(c.neighbours(old))
}

// neighbours returns the claims in the table that share old's subnet or
// identity.
func (c *claims) neighbours(old *claim) []*claim {
	if old == nil {
		return nil
	}
	var out []*claim
	for _, n := range c.bySubnet[old.subnet] {
		out = append(out, n)
	}
	if old.identity != "" && old.form == "" {
		for _, n := range c.byIdent[old.identity] {
			out = append(out, n)
		}
	}
	return out
}

// link adds cl to the lists of its subnet and identity; unlink has taken
// out any claim of the same key.
func (c *claims) link(cl *claim) {
	c.bySubnet[cl.subnet] = append(c.bySubnet[cl.subnet], cl)
	if cl.identity != "" && cl.form == "" {
		c.byIdent[cl.identity] = append(c.byIdent[cl.identity], cl)
	}
}

func (c *claims) unlink(cl *claim) {
	if cl == nil {
		return
	}
	if l := c.bySubnet[cl.subnet].without(cl.key); l != nil {
		c.bySubnet[cl.subnet] = l
	} else {
		delete(c.bySubnet, cl.subnet)
	}
	if cl.identity == "" || cl.form != "" {
		return
	}
	if l := c.byIdent[cl.identity].without(cl.key); l != nil {
		c.byIdent[cl.identity] = l
	} else {
		delete(c.byIdent, cl.identity)
	}
}

// component returns the claims reachable from seeds through shared
// subnets and identities.
func (c *claims) component(seeds []*claim) []*claim {
	seen := make(map[string]bool, len(seeds))
	var out, queue []*claim
	push := func(cl *claim) {
		if !seen[cl.key] && c.byKey[cl.key] == cl {
			seen[cl.key] = true
			queue = append(queue, cl)
		}
	}
	for _, cl := range seeds {
		push(cl)
	}
	for len(queue) > 0 {
		cl := queue[0]
		queue = queue[1:]
		out = append(out, cl)
		for _, n := range c.bySubnet[cl.subnet] {
			push(n)
		}
		if cl.identity != "" && cl.form == "" {
			for _, n := range c.byIdent[cl.identity] {
				push(n)
			}
		}
	}
	return out
}

// decide decides the component of seeds again and returns it. In order
// of precedence (this host's lease, then the older create revision, then
// the smaller key), a claim wins unless a winner before it holds its
// subnet, or its identity with another holder (public IP).
func (c *claims) decide(seeds []*claim) []*claim {
	comp := c.component(seeds)
	slices.SortFunc(comp, precedence)
	subnets := make(map[netip.Prefix]string)
	idents := make(map[string]*claim)
	for _, cl := range comp {
		if cl.form != "" {
			continue
		}
		cl.reason, cl.winner = "", ""
		if w, ok := subnets[cl.subnet]; ok {
			cl.reason, cl.winner = backend.RefusedSubnet, w
			continue
		}
		if w, ok := idents[cl.identity]; ok && cl.identity != "" && w.publicIP != cl.publicIP {
			cl.reason, cl.winner = backend.RefusedIdentity, w.key
			continue
		}
		subnets[cl.subnet] = cl.key
		if _, ok := idents[cl.identity]; !ok && cl.identity != "" {
			idents[cl.identity] = cl
		}
	}
	for _, cl := range comp {
		switch {
		case cl.formReason == backend.RefusedBackendType:
			cl.reason, cl.winner = cl.formReason, ""
		case cl.form != "":
			cl.reason, cl.winner = backend.RefusedKeyForm, subnets[cl.subnet]
		}
	}
	return comp
}

// precedence orders claims from the strongest: the own lease, then by
// create revision, then by key.
func precedence(a, b *claim) int {
	if a.own != b.own {
		if a.own {
			return -1
		}
		return 1
	}
	if c := cmp.Compare(a.rev, b.rev); c != 0 {
		return c
	}
	return cmp.Compare(a.key, b.key)
}
