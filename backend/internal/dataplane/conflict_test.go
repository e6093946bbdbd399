package dataplane

import (
	"fmt"
	"maps"
	"math/rand/v2"
	"net/netip"
	"slices"
	"testing"
)

// decision is what the table decided of one key: "" (wins) or
// "reason<winner".
func decisions(c *claims) map[string]string {
	out := make(map[string]string, len(c.byKey))
	for k, cl := range c.byKey {
		if cl.reason != "" {
			out[k] = cl.reason + "<" + cl.winner
		} else {
			out[k] = ""
		}
	}
	return out
}

// cl is a claim whose holder (public IP) is its own, derived from key.
func cl(key string, rev int64, subnet, ident string) *claim {
	h := netip.AddrFrom4([4]byte{192, 168, byte(len(key)), key[len(key)-1]})
	return &claim{key: key, subnet: netip.MustParsePrefix(subnet), publicIP: h, claimFields: claimFields{rev: rev, identity: ident}}
}

// heldBy is x with holder ip.
func heldBy(x *claim, ip string) *claim {
	x.publicIP = netip.MustParseAddr(ip)
	return x
}

func TestClaimsDecide(t *testing.T) {
	own := cl("10.5.1.0-24", 9, "10.5.1.0/24", "mac-own")
	own.own = true
	form := cl("10.5.2.0-24&fd00::-64", 1, "10.5.2.0/24", "mac-x")
	form.form = "IPv6 is not enabled"
	foreign := cl("10.5.3.0-24", 1, "10.5.3.0/24", "")
	foreign.form, foreign.wrongType = `a host of backend type "vxlan" cannot be a peer`, true
	for _, tc := range []struct {
		name   string
		claims []*claim
		want   map[string]string
	}{{
		name:   "distinct keys all win",
		claims: []*claim{cl("a", 1, "10.5.2.0/24", "m1"), cl("b", 2, "10.5.3.0/24", "m2")},
		want:   map[string]string{"a": "", "b": ""},
	}, {
		name:   "same subnet: older create revision wins",
		claims: []*claim{cl("b", 5, "10.5.2.0/24", "m1"), cl("a", 7, "10.5.2.0/24", "m2")},
		want:   map[string]string{"b": "", "a": "subnet<b"},
	}, {
		name:   "same revision: smaller key wins",
		claims: []*claim{cl("b", 5, "10.5.2.0/24", "m1"), cl("a", 5, "10.5.2.0/24", "m2")},
		want:   map[string]string{"a": "", "b": "subnet<a"},
	}, {
		name:   "same identity: older wins",
		claims: []*claim{cl("a", 3, "10.5.2.0/24", "m1"), cl("b", 2, "10.5.3.0/24", "m1")},
		want:   map[string]string{"b": "", "a": "identity<b"},
	}, {
		name: "same identity, same holder: keys of one host both win",
		claims: []*claim{heldBy(cl("a", 3, "10.5.2.0/24", "m1"), "192.168.77.2"), heldBy(cl("b", 2, "10.5.3.0/24", "m1"), "192.168.77.2"),
			heldBy(cl("c", 4, "10.5.4.0/24", "m1"), "192.168.77.3")},
		want: map[string]string{"a": "", "b": "", "c": "identity<b"},
	}, {
		name:   "no identity never conflicts",
		claims: []*claim{cl("a", 3, "10.5.2.0/24", ""), cl("b", 2, "10.5.3.0/24", "")},
		want:   map[string]string{"a": "", "b": ""},
	}, {
		name: "a refused key takes nothing: the next in line wins",
		// b loses m1 to a, so c may have 10.5.3.0/24.
		claims: []*claim{cl("a", 1, "10.5.2.0/24", "m1"), cl("b", 2, "10.5.3.0/24", "m1"), cl("c", 3, "10.5.3.0/24", "m3")},
		want:   map[string]string{"a": "", "b": "identity<a", "c": ""},
	}, {
		name:   "own lease wins whatever its revision",
		claims: []*claim{own, cl("x", 1, "10.5.1.0/24", "m9"), cl("y", 2, "10.5.7.0/24", "mac-own")},
		want:   map[string]string{own.key: "", "x": "subnet<" + own.key, "y": "identity<" + own.key},
	}, {
		name:   "refused form names the holder of its subnet",
		claims: []*claim{form, cl("10.5.2.0-24", 4, "10.5.2.0/24", "m2")},
		want:   map[string]string{form.key: "key-form<10.5.2.0-24", "10.5.2.0-24": ""},
	}, {
		name:   "refused form alone names none and takes nothing",
		claims: []*claim{form, cl("z", 4, "10.5.9.0/24", "mac-x")},
		want:   map[string]string{form.key: "key-form<", "z": ""},
	}, {
		name:   "another backend type takes nothing and names no winner",
		claims: []*claim{foreign, cl("w", 4, "10.5.3.0/24", "m4")},
		want:   map[string]string{foreign.key: "backend-type<", "w": ""},
	}} {
		t.Run(tc.name, func(t *testing.T) {
			c := newClaims()
			for _, x := range tc.claims {
				y := *x
				c.set(&y)
			}
			if got := decisions(c); !maps.Equal(got, tc.want) {
				t.Errorf("decisions = %v, want %v", got, tc.want)
			}
		})
	}
}

// TestClaimsConverge: when the winner goes, the loser wins; when the
// loser goes, nothing else changes; the winner of a subnet is what
// winner() says.
func TestClaimsConverge(t *testing.T) {
	c := newClaims()
	c.set(cl("honest", 1, "10.5.2.0/24", "m1"))
	_, touched := c.set(cl("bad", 2, "10.5.2.0/24", "m2"))
	if len(touched) != 2 {
		t.Fatalf("touched %d claims, want the 2 sharing the subnet", len(touched))
	}
	if w := c.winner(netip.MustParsePrefix("10.5.2.0/24")); w == nil || w.key != "honest" {
		t.Fatalf("winner = %v, want honest", w)
	}
	old, _ := c.remove("bad")
	if old == nil || old.key != "bad" {
		t.Fatalf("remove returned %v", old)
	}
	if w := c.winner(netip.MustParsePrefix("10.5.2.0/24")); w == nil || w.key != "honest" {
		t.Fatalf("after the loser went, winner = %v, want honest", w)
	}
	c.set(cl("bad", 2, "10.5.2.0/24", "m2"))
	c.remove("honest")
	if w := c.winner(netip.MustParsePrefix("10.5.2.0/24")); w == nil || w.key != "bad" {
		t.Fatalf("after the winner went, winner = %v, want bad", w)
	}
	// A key that moves to another subnet frees the old one.
	c.set(cl("bad", 2, "10.5.3.0/24", "m2"))
	if w := c.winner(netip.MustParsePrefix("10.5.2.0/24")); w != nil {
		t.Fatalf("10.5.2.0/24 still held by %s", w.key)
	}
	if d := decisions(c); d["bad"] != "" {
		t.Fatalf("bad: %q", d["bad"])
	}
}

// reference decides a set of claims from scratch, in one greedy pass.
func reference(set []*claim) map[string]string {
	c := newClaims()
	for _, x := range set {
		y := *x
		c.byKey[y.key] = &y
		c.link(&y)
	}
	all := slices.Collect(maps.Values(c.byKey))
	c.decide(all)
	return decisions(c)
}

// FuzzClaimsOrder: the same set of keys, delivered in any order (with
// values that come and go before the final ones), gives the same
// decisions as deciding the set at once.
func FuzzClaimsOrder(f *testing.F) {
	f.Add(uint64(1), uint8(6))
	f.Add(uint64(42), uint8(20))
	f.Add(uint64(7), uint8(3))
	f.Fuzz(func(t *testing.T, seed uint64, n uint8) {
		r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
		n = n%24 + 1
		gen := func(k int) *claim {
			x := cl(fmt.Sprintf("k%02d", k), int64(r.IntN(8)),
				fmt.Sprintf("10.5.%d.0/24", r.IntN(6)), fmt.Sprintf("m%d", r.IntN(6)))
			if r.IntN(8) == 0 {
				x.identity = ""
			}
			x.publicIP = netip.AddrFrom4([4]byte{192, 168, 77, byte(r.IntN(3))})
			if r.IntN(10) == 0 {
				x.form = "refused"
			}
			if k == 0 && r.IntN(3) == 0 {
				x.own = true
			}
			return x
		}
		final := make([]*claim, n)
		for k := range final {
			final[k] = gen(k)
		}
		want := reference(final)
		c := newClaims()
		// Noise: keys that come and go, and earlier values of the
		// final keys.
		for range int(n) {
			k := r.IntN(int(n) + 4)
			if r.IntN(3) == 0 {
				c.remove(fmt.Sprintf("k%02d", k))
			} else {
				c.set(gen(k))
			}
		}
		for k := int(n); k < int(n)+4; k++ {
			c.remove(fmt.Sprintf("k%02d", k))
		}
		for _, i := range r.Perm(int(n)) {
			y := *final[i]
			c.set(&y)
		}
		if got := decisions(c); !maps.Equal(got, want) {
			t.Fatalf("incremental decisions %v\nwant (from scratch) %v", got, want)
		}
		// Every subnet has at most one winner, and winners share an
		// identity only with one holder.
		idents := map[string]*claim{}
		for s := range c.bySubnet {
			if w := c.winner(s); w != nil && w.identity != "" {
				if o, dup := idents[w.identity]; dup && o.publicIP != w.publicIP {
					t.Fatalf("identity %s won by %s (%s) and %s (%s)", w.identity, o.key, o.publicIP, w.key, w.publicIP)
				}
				idents[w.identity] = w
			}
			wins := 0
			for x := range c.ofSubnet(s) {
				if x.reason == "" {
					wins++
				}
			}
			if wins > 1 {
				t.Fatalf("subnet %s has %d winners", s, wins)
			}
		}
	})
}

// TestClaimsIndexesEmptyAfterRemoval: the chains by subnet and identity
// hold each key once, a contested subnet or identity several, and nothing
// is left of a subnet or identity once its last key is gone.
func TestClaimsIndexesEmptyAfterRemoval(t *testing.T) {
	c := newClaims()
	keys := []*claim{
		cl("a", 1, "10.5.2.0/24", "m1"), cl("b", 2, "10.5.2.0/24", "m2"),
		cl("c", 3, "10.5.3.0/24", "m1"), cl("d", 4, "10.5.4.0/24", "m4"),
	}
	for _, x := range keys {
		c.set(x)
	}
	// A key replaced by itself is still listed once.
	c.set(cl("d", 4, "10.5.4.0/24", "m4"))
	if n := len(slices.Collect(c.ofSubnet(netip.MustParsePrefix("10.5.2.0/24")))); n != 2 {
		t.Fatalf("contested subnet lists %d claims, want 2", n)
	}
	if n := len(slices.Collect(c.ofIdent("m1"))); n != 2 {
		t.Fatalf("contested identity lists %d claims, want 2", n)
	}
	if n := len(slices.Collect(c.ofSubnet(netip.MustParsePrefix("10.5.4.0/24")))); n != 1 {
		t.Fatalf("subnet of a replaced key lists %d claims, want 1", n)
	}
	for _, x := range keys {
		c.remove(x.key)
	}
	if len(c.byKey)+len(c.bySubnet)+len(c.byIdent) != 0 {
		t.Fatalf("left after removing every key: %d keys, subnets %v, identities %v", len(c.byKey), c.bySubnet, c.byIdent)
	}
}
