package masq

import (
	"errors"
	"net/netip"
	"reflect"
	"strings"
	"testing"
)

func TestRulesValidation(t *testing.T) {
	p := netip.MustParsePrefix
	tests := []struct {
		name   string
		r      Rules
		ok     bool
		v4, v6 bool // families wanted
	}{
		{"none", Rules{}, true, false, false},
		{"ipv4", Rules{Network: p("10.5.0.0/16"), Subnet: p("10.5.58.0/24")}, true, true, false},
		{"ipv6", Rules{IPv6Network: p("fd00:5::/48"), IPv6Subnet: p("fd00:5:0:3a00::/56")}, true, false, true},
		{"dual", rulesA, true, true, true},
		{"subnet given as host address", Rules{Network: p("10.5.0.0/16"), Subnet: p("10.5.58.1/24")}, true, true, false},
		{"subnet equals network", Rules{Network: p("10.5.0.0/16"), Subnet: p("10.5.0.0/16")}, true, true, false},
		{"network without subnet", Rules{Network: p("10.5.0.0/16")}, false, false, false},
		{"subnet without network", Rules{IPv6Subnet: p("fd00:5::/64")}, false, false, false},
		{"subnet outside network", Rules{Network: p("10.5.0.0/16"), Subnet: p("10.6.1.0/24")}, false, false, false},
		{"subnet wider than network", Rules{Network: p("10.5.0.0/16"), Subnet: p("10.0.0.0/8")}, false, false, false},
		{"IPv6 in IPv4 fields", Rules{Network: p("fd00:5::/48"), Subnet: p("fd00:5::/64")}, false, false, false},
		{"IPv4 in IPv6 fields", Rules{IPv6Network: p("10.5.0.0/16"), IPv6Subnet: p("10.5.1.0/24")}, false, false, false},
		{"IPv4-mapped", Rules{IPv6Network: p("::ffff:10.5.0.0/112"), IPv6Subnet: p("::ffff:10.5.1.0/120")}, false, false, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v4, v6, err := tt.r.families()
			if (err == nil) != tt.ok {
				t.Fatalf("families() error = %v, want ok=%v", err, tt.ok)
			}
			if err != nil {
				if !errors.Is(err, ErrInvalidRules) {
					t.Errorf("error %v is not ErrInvalidRules", err)
				}
				return
			}
			if v4.want != tt.v4 || v6.want != tt.v6 {
				t.Errorf("wanted families v4=%v v6=%v, want %v %v", v4.want, v6.want, tt.v4, tt.v6)
			}
			if v4.want && v4.subnet != v4.subnet.Masked() {
				t.Errorf("subnet %v not masked", v4.subnet)
			}
		})
	}
}

func TestNatRulesMatchSpec(t *testing.T) {
	v4, v6, err := rulesA.families()
	if err != nil {
		t.Fatal(err)
	}
	// docs/compatibility.md §7.1, with N and S filled in.
	want4 := []string{
		"-m mark --mark 0x4000/0x4000 -j RETURN",
		"-s 10.5.58.0/24 -d 10.5.0.0/16 -j RETURN",
		"-s 10.5.0.0/16 -d 10.5.58.0/24 -j RETURN",
		"! -s 10.5.0.0/16 -d 10.5.58.0/24 -j RETURN",
		"-s 10.5.0.0/16 ! -d 224.0.0.0/4 -j MASQUERADE --random-fully",
		"! -s 10.5.0.0/16 -d 10.5.0.0/16 -j MASQUERADE --random-fully",
	}
	if got := natRules(v4, true); !reflect.DeepEqual(got, want4) {
		t.Errorf("natRules(v4) =\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want4, "\n"))
	}
	if got := natRules(v6, false); got[4] != "-s fd00:5::/48 ! -d ff00::/8 -j MASQUERADE" {
		t.Errorf("IPv6 masquerade without random-fully = %q", got[4])
	}
	wantFwd := []string{"-s fd00:5::/48 -j ACCEPT", "-d fd00:5::/48 -j ACCEPT"}
	if got := forwardRules(v6); !reflect.DeepEqual(got, wantFwd) {
		t.Errorf("forwardRules(v6) = %q, want %q", got, wantFwd)
	}
}

func TestSplitAndCanonicalRule(t *testing.T) {
	tests := []struct {
		line      string
		tokens    []string
		canonical string
	}{
		{`-s 10.5.0.0/16 ! -d 224.0.0.0/4 -j MASQUERADE --random-fully`,
			[]string{"-s", "10.5.0.0/16", "!", "-d", "224.0.0.0/4", "-j", "MASQUERADE", "--random-fully"},
			`-s 10.5.0.0/16 ! -d 224.0.0.0/4 -j MASQUERADE --random-fully`},
		{`-m comment --comment "netagent masq" -j FLANNEL-POSTRTG`,
			[]string{"-m", "comment", "--comment", "netagent masq", "-j", "FLANNEL-POSTRTG"},
			`-m comment --comment "netagent masq" -j FLANNEL-POSTRTG`},
		{`-m comment --comment "say \"hi\"" -j ACCEPT`,
			[]string{"-m", "comment", "--comment", `say "hi"`, "-j", "ACCEPT"},
			`-m comment --comment "say \"hi\"" -j ACCEPT`},
		{"-s  10.5.1.7/16\t-d 10.5.0.1 -j RETURN",
			[]string{"-s", "10.5.1.7/16", "-d", "10.5.0.1", "-j", "RETURN"},
			"-s 10.5.0.0/16 -d 10.5.0.1/32 -j RETURN"},
		{`-d fd00:5:0:0::/48 -j ACCEPT`,
			[]string{"-d", "fd00:5:0:0::/48", "-j", "ACCEPT"},
			`-d fd00:5::/48 -j ACCEPT`},
		{`--comment ""`, []string{"--comment", ""}, `--comment ""`},
	}
	for _, tt := range tests {
		got, err := splitRule(tt.line)
		if err != nil {
			t.Errorf("splitRule(%q): %v", tt.line, err)
			continue
		}
		if !reflect.DeepEqual(got, tt.tokens) {
			t.Errorf("splitRule(%q) = %q, want %q", tt.line, got, tt.tokens)
		}
		if c := canonicalRule(got); c != tt.canonical {
			t.Errorf("canonicalRule(%q) = %q, want %q", got, c, tt.canonical)
		}
		// The canonical form is a fixed point.
		again, err := splitRule(tt.canonical)
		if err != nil || canonicalRule(again) != tt.canonical {
			t.Errorf("canonical form %q does not round-trip: %q, %v", tt.canonical, canonicalRule(again), err)
		}
	}
	if _, err := splitRule(`--comment "open`); err == nil {
		t.Error("splitRule accepted an unterminated quote")
	}
}

func TestParseListing(t *testing.T) {
	lines := []string{
		"-N FLANNEL-POSTRTG",
		"-A FLANNEL-POSTRTG -m mark --mark 0x4000/0x4000 -j RETURN -c 7 700",
		"-A FLANNEL-POSTRTG -s 10.5.58.0/24 -d 10.5.0.0/16 -j RETURN",
		"-A OTHER -j ACCEPT",
		"",
	}
	l, err := parseListing("FLANNEL-POSTRTG", lines)
	if err != nil {
		t.Fatal(err)
	}
	want := chainListing{exists: true, rules: []string{
		"-m mark --mark 0x4000/0x4000 -j RETURN",
		"-s 10.5.58.0/24 -d 10.5.0.0/16 -j RETURN",
	}}
	if !reflect.DeepEqual(l, want) {
		t.Errorf("parseListing = %+v, want %+v", l, want)
	}
	if l, _ := parseListing("POSTROUTING", []string{"-P POSTROUTING ACCEPT"}); !l.exists || len(l.rules) != 0 {
		t.Errorf("built-in chain listing = %+v", l)
	}
	if !jumpsTo(`-m comment --comment "flanneld masq" -j FLANNEL-POSTRTG`, "FLANNEL-POSTRTG") ||
		jumpsTo(`-m comment --comment "-j FLANNEL-POSTRTG" -j RETURN`, "FLANNEL-POSTRTG") {
		t.Error("jumpsTo misreads a rule")
	}
}

func TestDiffRules(t *testing.T) {
	want := []string{"a", "b"}
	tests := []struct {
		have chainListing
		diff string
	}{
		{chainListing{}, "chain missing"},
		{chainListing{exists: true, rules: []string{"a", "b"}}, ""},
		{chainListing{exists: true, rules: []string{"a"}}, `rule 2 missing: want "b"`},
		{chainListing{exists: true, rules: []string{"a", "b", "c"}}, `rule 3 is extra: "c"`},
		{chainListing{exists: true, rules: []string{"b", "a"}}, `rule 1 is "b", want "a"`},
	}
	for _, tt := range tests {
		if got := diffRules(tt.have, want); got != tt.diff {
			t.Errorf("diffRules(%v) = %q, want %q", tt.have, got, tt.diff)
		}
	}
}

func TestNormalizeNFT(t *testing.T) {
	v4, _, err := rulesA.families()
	if err != nil {
		t.Fatal(err)
	}
	// As nft 1.0 prints the table, with handles.
	listing := `table ip netagent { # handle 7
	chain postrouting { # handle 1
		type nat hook postrouting priority srcnat; policy accept;
		meta mark & 0x00004000 == 0x00004000 return # handle 2
		ip saddr 10.5.58.0/24 ip daddr 10.5.0.0/16 return # handle 3
		ip saddr 10.5.0.0/16 ip daddr 10.5.58.0/24 return # handle 4
		ip saddr != 10.5.0.0/16 ip daddr 10.5.58.0/24 return # handle 5
		ip saddr 10.5.0.0/16 ip daddr != 224.0.0.0/4 masquerade fully-random # handle 6
		ip saddr != 10.5.0.0/16 ip daddr 10.5.0.0/16 masquerade fully-random # handle 7
	}

	chain forward { # handle 8
		type filter hook forward priority filter; policy accept;
		ip saddr 10.5.0.0/16 accept # handle 9
		ip daddr 10.5.0.0/16 accept # handle 10
	}
}
`
	want := nftTableLines("ip", NFTable, v4, true)
	if got := normalizeNFT(listing); !reflect.DeepEqual(got, want) {
		t.Errorf("normalizeNFT =\n%s\nwant\n%s\ndiff: %s", strings.Join(got, "\n"), strings.Join(want, "\n"), diffLines(got, want))
	}
	// Older nft prints numeric priorities.
	old := strings.NewReplacer("priority srcnat", "priority 100", "priority filter", "priority 0").Replace(listing)
	if got := normalizeNFT(old); !reflect.DeepEqual(got, want) {
		t.Errorf("numeric priorities: %s", diffLines(got, want))
	}
	if d := diffLines(normalizeNFT(listing), nftTableLines("ip", NFTable, v4, false)); d == "" {
		t.Error("a table with fully-random matches one without")
	}
}
