package kubelab

import (
	"net/netip"
	"slices"
	"testing"

	"github.com/netagent/netagent/lease"
)

func TestAllocatePodCIDRs(t *testing.T) {
	parse := func(s string) *lease.Config {
		t.Helper()
		c, err := lease.ParseConfig([]byte(s))
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	for _, tc := range []struct {
		name   string
		config string
		i      int
		want   []string
		err    bool
	}{
		{"first Node gets the first subnet", `{"Network":"10.244.0.0/16"}`, 0, []string{"10.244.0.0/24"}, false},
		{"third Node", `{"Network":"10.244.0.0/16"}`, 2, []string{"10.244.2.0/24"}, false},
		{"SubnetLen", `{"Network":"10.5.0.0/16","SubnetLen":26}`, 5, []string{"10.5.1.64/26"}, false},
		{"SubnetMin ignored", `{"Network":"10.5.0.0/16","SubnetMin":"10.5.10.0"}`, 0, []string{"10.5.0.0/24"}, false},
		{"dual stack: IPv4 first", `{"Network":"10.5.0.0/16","EnableIPv6":true,"IPv6Network":"fd00:5::/48"}`, 1,
			[]string{"10.5.1.0/24", "fd00:5:0:1::/64"}, false},
		{"IPv6 only", `{"EnableIPv4":false,"EnableIPv6":true,"IPv6Network":"fd00:5::/48","IPv6SubnetLen":56}`, 3,
			[]string{"fd00:5:0:300::/56"}, false},
		{"network full", `{"Network":"10.5.0.0/22"}`, 4, nil, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := AllocatePodCIDRs(parse(tc.config), tc.i)
			if tc.err {
				if err == nil {
					t.Fatalf("got %v, want an error", got)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var want []netip.Prefix
			for _, s := range tc.want {
				want = append(want, netip.MustParsePrefix(s))
			}
			if !slices.Equal(got, want) {
				t.Fatalf("got %v, want %v", got, want)
			}
		})
	}
}

// TestAgentRules reads the shipped ClusterRole: what the agent may do.
func TestAgentRules(t *testing.T) {
	rules, err := AgentRules()
	if err != nil {
		t.Fatal(err)
	}
	allowed := map[string]bool{}
	for _, r := range rules {
		for _, res := range r.Resources {
			for _, v := range r.Verbs {
				allowed[v+" "+res] = true
			}
		}
	}
	for _, want := range []string{"get nodes", "list nodes", "watch nodes", "patch nodes/status"} {
		if !allowed[want] {
			t.Errorf("netagent.yaml's ClusterRole lacks %q: %+v", want, rules)
		}
	}
}
