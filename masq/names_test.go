package masq

import (
	"strings"
	"testing"
)

func TestInstanceNames(t *testing.T) {
	for _, tt := range []struct {
		id      string
		want    Names
		wantErr bool
	}{
		{"", Names{"FLANNEL-POSTRTG", "FLANNEL-FWD", "netagent"}, false},
		{"3f2a9c1b", Names{"FLANNEL-POSTRTG-3f2a9c1b", "FLANNEL-FWD-3f2a9c1b", "netagent_3f2a9c1b"}, false},
		{"abcdefghijkl", Names{"FLANNEL-POSTRTG-abcdefghijkl", "FLANNEL-FWD-abcdefghijkl", "netagent_abcdefghijkl"}, false},
		{"abcdefghijklm", Names{}, true}, // 29 characters
		{"a-b", Names{}, true},
		{"AB", Names{}, true},
	} {
		got, err := InstanceNames(tt.id)
		if (err != nil) != tt.wantErr || got != tt.want {
			t.Errorf("InstanceNames(%q) = %+v, %v; want %+v, error %t", tt.id, got, err, tt.want, tt.wantErr)
		}
	}
}

// Two instances in one namespace, the default one and another, each keep
// their own rules: neither's Apply changes the other's, and removing one
// leaves the other's in place.
func TestTwoInstancesCoexist(t *testing.T) {
	other, err := InstanceNames("3f2a9c1b")
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name        string
		first, then func(t *testing.T) (testManager, error)
		listing     []string
	}{
		{"iptables",
			func(t *testing.T) (testManager, error) { return NewIPTables(testLogger(t)) },
			func(t *testing.T) (testManager, error) { return NewIPTables(testLogger(t), WithChains(other)) },
			[]string{"iptables-save"}},
		{"nftables",
			func(t *testing.T) (testManager, error) { return NewNFTables(testLogger(t)) },
			func(t *testing.T) (testManager, error) { return NewNFTables(testLogger(t), WithTable(other.Table)) },
			[]string{"nft", "list", "ruleset"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			requireCmd(t, tt.listing[0])
			e := newMgrEnv(t, tt.first)
			e2 := &mgrEnv{t: t, n: e.n, newFn: tt.then}
			m2 := e2.newManager()
			e.apply(e.m, rulesA)
			e2.apply(m2, rulesB)
			for i := range 2 {
				if ch := e.apply(e.m, rulesA); len(ch) != 0 {
					t.Errorf("round %d: default instance's Apply changed %q", i, ch)
				}
				if ch := e2.apply(m2, rulesB); len(ch) != 0 {
					t.Errorf("round %d: other instance's Apply changed %q", i, ch)
				}
			}
			all := e.n.sh(t, tt.listing...)
			for _, want := range []string{"10.5.0.0/16", "10.9.0.0/16"} {
				if !strings.Contains(all, want) {
					t.Errorf("ruleset lacks %s:\n%s", want, all)
				}
			}
			e2.n.do(t, func() error { return m2.Remove(testCtx(t)) })
			if ok, reason := e.check(rulesA); !ok {
				t.Errorf("default instance's rules changed by the other's Remove: %s", reason)
			}
			if all := e.n.sh(t, tt.listing...); strings.Contains(all, "10.9.0.0/16") {
				t.Errorf("other instance's rules left after its Remove:\n%s", all)
			}
		})
	}
}
