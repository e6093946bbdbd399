package test

import (
	"fmt"
	"regexp"
	"strconv"
	"testing"

	"github.com/netagent/netagent/internal/lab"
)

// countSources installs, in ns, an nftables counter of the ICMP echo
// requests received from each of srcs, and returns a function that reads
// them.
func (c *cluster) countSources(ns string, srcs ...string) func() map[string]int {
	c.t.Helper()
	c.mustExec(ns, "nft", "add table ip natest")
	c.mustExec(ns, "nft", "add chain ip natest in { type filter hook input priority 0 ; }")
	for _, s := range srcs {
		c.mustExec(ns, "nft", fmt.Sprintf("add rule ip natest in ip saddr %s icmp type echo-request counter comment \"%s\"", s, s))
	}
	re := regexp.MustCompile(`ip saddr (\S+) icmp type echo-request counter packets (\d+)`)
	return func() map[string]int {
		c.t.Helper()
		got := map[string]int{}
		for _, m := range re.FindAllStringSubmatch(c.mustExec(ns, "nft", "list chain ip natest in"), -1) {
			n, _ := strconv.Atoi(m[2])
			got[m[1]] = n
		}
		return got
	}
}

// TestMasquerade: container → another host's underlay address leaves with
// the sending host's address; container → container keeps the container's.
func TestMasquerade(t *testing.T) {
	t.Parallel()
	c := newCluster(t, clusterOptions{Hosts: 2, Config: vxlanConfig})
	c.startAll()
	c.awaitReady()
	h1, h2 := c.hosts()[0], c.hosts()[1]
	c1, c2 := c.addContainer(h1), c.addContainer(h2)
	h1Addr := h1.Underlay.Addr().String()

	atHost := c.countSources(h2.NS, h1Addr, c1.IP.String())
	if err := c.ping(c1.NS, h2.Underlay.Addr(), lab.PingOptions{Count: 3}); err != nil {
		t.Fatalf("container -> other host's underlay address: %v", err)
	}
	if got := atHost(); got[h1Addr] < 3 || got[c1.IP.String()] != 0 {
		t.Errorf("at %s, echo requests by source = %v: want 3 from %s (masqueraded), none from %s", h2.Name, got, h1Addr, c1.IP)
	}

	atCtn := c.countSources(c2.NS, h1Addr, c1.IP.String())
	if err := c.ping(c1.NS, c2.IP, lab.PingOptions{Count: 3}); err != nil {
		t.Fatalf("container -> container: %v", err)
	}
	if got := atCtn(); got[c1.IP.String()] < 3 || got[h1Addr] != 0 {
		t.Errorf("at %s, echo requests by source = %v: want 3 from %s (not masqueraded)", c2.NS, got, c1.IP)
	}
}
