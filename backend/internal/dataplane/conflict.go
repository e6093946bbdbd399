package dataplane

import (
	"cmp"
	"iter"
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
	// claim never wins nor takes anything. A refused key form reports
	// the key that holds its subnet; a lease of another backend type
	// (wrongType) is refused for that alone.
	form string

	// The decision: reason is empty when the claim wins, else a
	// backend.Refused* reason and winner the key it lost to ("" when
	// none holds the subnet, for a refused form).
	reason string
	winner string
	// nextInSubnet and nextInIdent chain the claims of the subnet and
	// of the identity (see claims).
	nextInSubnet, nextInIdent *claim
}

// claims is the table of lease keys an engine knows, and who wins. Only
// the keys connected to a changed key by a shared subnet or identity are
// decided again; the outcome depends on the set of claims alone, not on
// the order they came in.
//
// bySubnet and byIdent hold the first claim of each subnet and identity,
// which chains the others (nextInSubnet, nextInIdent), at most one per
// key, in no particular order: one, almost always (several only where
// keys contend), so neither a map nor a list per subnet: with 5,000
// leases a map each was ~3 MB of the agent's heap, a list 0.4 MB.
type claims struct {
	byKey    map[string]*claim
	bySubnet map[netip.Prefix]*claim
	byIdent  map[string]*claim
}

func newClaims() *claims {
	return &claims{
		byKey:    make(map[string]*claim),
		bySubnet: make(map[netip.Prefix]*claim),
		byIdent:  make(map[string]*claim),
	}
}

// ofSubnet yields the claims of subnet s.
func (c *claims) ofSubnet(s netip.Prefix) iter.Seq[*claim] {
	return func(yield func(*claim) bool) {
		for cl := c.bySubnet[s]; cl != nil; cl = cl.nextInSubnet {
			if !yield(cl) {
				return
			}
		}
	}
}

// ofIdent yields the claims of identity id.
func (c *claims) ofIdent(id string) iter.Seq[*claim] {
	return func(yield func(*claim) bool) {
		for cl := c.byIdent[id]; cl != nil; cl = cl.nextInIdent {
			if !yield(cl) {
				return
			}
		}
	}
}

// hasIdent says whether cl is listed under its identity.
func (cl *claim) hasIdent() bool { return cl.identity != "" && cl.form == "" }

// get returns the claim of key, or nil.
func (c *claims) get(key string) *claim { return c.byKey[key] }

// winner returns the claim that holds subnet s, or nil.
func (c *claims) winner(s netip.Prefix) *claim {
	for cl := range c.ofSubnet(s) {
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
// of old made for a new route mode (the same key, subnet and identity,
// and so the same successors in their chains).
func (c *claims) replace(old, nw *claim) {
	c.byKey[old.key] = nw
	if c.bySubnet[old.subnet] == old {
		c.bySubnet[old.subnet] = nw
	}
	for cl := range c.ofSubnet(old.subnet) {
		if cl.nextInSubnet == old {
			cl.nextInSubnet = nw
		}
	}
	if !old.hasIdent() {
		return
	}
	if c.byIdent[old.identity] == old {
		c.byIdent[old.identity] = nw
	}
	for cl := range c.ofIdent(old.identity) {
		if cl.nextInIdent == old {
			cl.nextInIdent = nw
		}
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
	out := slices.Collect(c.ofSubnet(old.subnet))
	if old.hasIdent() {
		out = slices.AppendSeq(out, c.ofIdent(old.identity))
	}
	return out
}

// link adds cl to the chains of its subnet and identity; unlink has
// taken out any claim of the same key.
func (c *claims) link(cl *claim) {
	cl.nextInSubnet = c.bySubnet[cl.subnet]
	c.bySubnet[cl.subnet] = cl
	cl.nextInIdent = nil
	if cl.hasIdent() {
		cl.nextInIdent = c.byIdent[cl.identity]
		c.byIdent[cl.identity] = cl
	}
}

func (c *claims) unlink(cl *claim) {
	if cl == nil {
		return
	}
	if first := c.bySubnet[cl.subnet]; first == cl {
		if cl.nextInSubnet != nil {
			c.bySubnet[cl.subnet] = cl.nextInSubnet
		} else {
			delete(c.bySubnet, cl.subnet)
		}
	} else {
		for p := first; p != nil; p = p.nextInSubnet {
			if p.nextInSubnet == cl {
				p.nextInSubnet = cl.nextInSubnet
				break
			}
		}
	}
	if !cl.hasIdent() {
		return
	}
	if first := c.byIdent[cl.identity]; first == cl {
		if cl.nextInIdent != nil {
			c.byIdent[cl.identity] = cl.nextInIdent
		} else {
			delete(c.byIdent, cl.identity)
		}
	} else {
		for p := first; p != nil; p = p.nextInIdent {
			if p.nextInIdent == cl {
				p.nextInIdent = cl.nextInIdent
				break
			}
		}
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
		for n := range c.ofSubnet(cl.subnet) {
			push(n)
		}
		if cl.hasIdent() {
			for n := range c.ofIdent(cl.identity) {
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
		case cl.wrongType:
			cl.reason, cl.winner = backend.RefusedBackendType, ""
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
