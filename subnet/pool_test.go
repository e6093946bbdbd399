package subnet

import (
	"errors"
	"math/big"
	"net/netip"
	"strings"
	"testing"
)

func TestPoolPick(t *testing.T) {
	p := netip.MustParsePrefix
	v4 := pool{p("10.5.1.0/24"), p("10.5.4.0/24"), 24}
	big4 := pool{p("10.0.0.0/30"), p("10.255.255.252/30"), 30}
	v6 := pool{p("fc00:0:0:1::/64"), p("fc00:0:0:ffff::/64"), 64}
	huge6 := pool{p("fc00::/126"), p("fdff:ffff:ffff:ffff:ffff:ffff:ffff:fffc/126"), 126}
	taken := func(exact []string, odd ...string) *takenSet {
		s := &takenSet{exact: map[netip.Prefix]struct{}{}}
		for _, e := range exact {
			s.exact[p(e)] = struct{}{}
		}
		for _, o := range odd {
			s.odd = append(s.odd, p(o))
		}
		return s
	}
	tests := []struct {
		name    string
		pool    pool
		taken   *takenSet
		prefer  string
		want    []string // any of these
		wantErr string
	}{
		{"prefer free", v4, taken(nil), "10.5.3.0/24", []string{"10.5.3.0/24"}, ""},
		{"prefer taken", v4, taken([]string{"10.5.3.0/24", "10.5.1.0/24"}), "10.5.3.0/24", []string{"10.5.2.0/24", "10.5.4.0/24"}, ""},
		{"prefer outside", v4, taken([]string{"10.5.1.0/24", "10.5.2.0/24", "10.5.3.0/24"}), "10.5.9.0/24", []string{"10.5.4.0/24"}, ""},
		{"prefer of other length", v4, taken([]string{"10.5.1.0/24", "10.5.2.0/24", "10.5.4.0/24"}), "10.5.1.0/25", []string{"10.5.3.0/24"}, ""},
		{"full", v4, taken([]string{"10.5.1.0/24", "10.5.2.0/24", "10.5.3.0/24", "10.5.4.0/24"}), "", nil,
			"subnet: pool exhausted: all 4 subnets of 10.5.1.0/24..10.5.4.0/24 are leased"},
		{"blocked by a wider old subnet", v4, taken([]string{"10.5.4.0/24"}, "10.5.0.0/22"), "", nil, "all 4 subnets"},
		{"blocked by a narrower old subnet", v4, taken([]string{"10.5.1.0/24", "10.5.2.0/24", "10.5.3.0/24"}, "10.5.4.128/25"), "", nil, "all 4 subnets"},
		{"large pool full (exact search)", big4, taken([]string{"10.128.0.0/30"}, "10.0.0.0/9", "10.128.0.0/9"), "", nil, "all 4194304 subnets"},
		{"large pool with one gap", big4, taken([]string{"10.128.0.0/30"}, "10.0.0.0/9", "10.128.0.8/29", "10.128.0.16/28", "10.128.0.32/27",
			"10.128.0.64/26", "10.128.0.128/25", "10.128.1.0/24", "10.128.2.0/23", "10.128.4.0/22", "10.128.8.0/21", "10.128.16.0/20",
			"10.128.32.0/19", "10.128.64.0/18", "10.128.128.0/17", "10.129.0.0/16", "10.130.0.0/15", "10.132.0.0/14", "10.136.0.0/13",
			"10.144.0.0/12", "10.160.0.0/11", "10.192.0.0/10"), "", []string{"10.128.0.4/30"}, ""},
		{"v6 pool full", v6, taken(nil, "fc00::/48"), "", nil, "all 65535 subnets of fc00:0:0:1::/64..fc00:0:0:ffff::/64"},
		{"huge v6 pool", huge6, taken(nil, "fc00::/8"), "", []string{"fd00::/8"}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var prefer netip.Prefix
			if tt.prefer != "" {
				prefer = p(tt.prefer)
			}
			got, err := tt.pool.pick(tt.taken, prefer)
			if tt.wantErr != "" {
				if !errors.Is(err, ErrPoolExhausted) || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("pick = %v, %v; want error %q", got, err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			ok := false
			for _, w := range tt.want {
				ok = ok || p(w).Contains(got.Addr()) && got.Bits() == tt.pool.bits
			}
			if !ok || !tt.pool.contains(got) || !tt.taken.free(got) {
				t.Errorf("pick = %s, want one of %v, free and in the pool", got, tt.want)
			}
		})
	}
}

// TestPoolPickSpread: random picks cover the pool (hosts starting together
// rarely collide).
func TestPoolPickSpread(t *testing.T) {
	p := pool{netip.MustParsePrefix("10.5.1.0/24"), netip.MustParsePrefix("10.5.16.0/24"), 24}
	seen := map[netip.Prefix]bool{}
	for range 2000 {
		q, err := p.pick(&takenSet{exact: map[netip.Prefix]struct{}{}}, netip.Prefix{})
		if err != nil {
			t.Fatal(err)
		}
		seen[q] = true
	}
	if len(seen) != 16 {
		t.Errorf("2000 picks hit %d of 16 subnets", len(seen))
	}
	if n := p.size(); n.Cmp(big.NewInt(16)) != 0 {
		t.Errorf("size %v", n)
	}
}
