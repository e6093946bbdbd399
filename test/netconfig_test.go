package test

import (
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/netagent/netagent/internal/await"
	"github.com/netagent/netagent/internal/lab"
)

// TestConfigMissingThenInvalidThenFixed: an agent started before the
// network config exists waits; an invalid config is reported with its field
// and the agent keeps waiting; once the config is fixed it proceeds, without
// a restart.
func TestConfigMissingThenInvalidThenFixed(t *testing.T) {
	t.Parallel()
	c := newCluster(t, clusterOptions{Hosts: 1})
	h := c.hosts()[0]
	p := c.startAgent(h)
	await.Eventually(t, 60*time.Second, "agent reports the missing config", func() error {
		return logContains(p, "/coreos.com/network/config")
	})
	c.put(prefix+"/config", `{"Network":"10.5.0.0/16","SubnetMin":"10.6.0.0"}`)
	await.Eventually(t, 60*time.Second, "agent reports the invalid field", func() error {
		return logContains(p, "SubnetMin 10.6.0.0 is outside Network 10.5.0.0/16")
	})
	if _, err := os.Stat(h.SubnetFile()); err == nil {
		t.Fatal("subnet file written before the config was valid")
	}
	if p.Exited() {
		t.Fatalf("agent exited on a bad config:\n%s", p.Tail(20))
	}
	c.put(prefix+"/config", vxlanConfig)
	info := c.awaitSubnetFile(h)
	if !netip.MustParsePrefix("10.5.0.0/16").Contains(info.Subnet.Addr()) {
		t.Fatalf("lease %s outside the network", info.Subnet)
	}
}

// TestConfigChangeAtRuntime: a new network in etcd is picked up by the
// running agents: new leases, files, data plane and masquerade rules, and
// nothing of the old network left.
func TestConfigChangeAtRuntime(t *testing.T) {
	t.Parallel()
	c := newCluster(t, clusterOptions{Hosts: 2, Config: vxlanConfig})
	c.startAll()
	c.awaitReady()
	h1, h2 := c.hosts()[0], c.hosts()[1]
	p1 := c.agent(h1)

	c.put(prefix+"/config", `{"Network":"10.7.0.0/16","Backend":{"Type":"vxlan"}}`)
	newNet := netip.MustParsePrefix("10.7.0.0/16")
	for _, h := range c.hosts() {
		await.Eventually(t, 60*time.Second, h.Name+" leases in the new network", func() error {
			info, err := lab.AwaitSubnetFile(c.ctx, h)
			if err != nil {
				return err
			}
			if info.Network != newNet || !newNet.Contains(info.Subnet.Addr()) {
				return errorf("subnet file still says %s in %s", info.Subnet, info.Network)
			}
			return nil
		})
	}
	if p1.Exited() {
		t.Fatal("agent restarted to follow the config change; it should follow in process")
	}
	await.Eventually(t, 60*time.Second, "masquerade rules follow the new network", func() error {
		out, err := c.exec(h1.NS, "iptables", "-t", "nat", "-S", "FLANNEL-POSTRTG")
		if err != nil {
			return err
		}
		if strings.Contains(string(out), "10.5.") || !strings.Contains(string(out), "10.7.0.0/16") {
			return errorf("rules:\n%s", out)
		}
		return nil
	})
	c.awaitReady()
	c1, c2 := c.addContainer(h1), c.addContainer(h2)
	if !newNet.Contains(c1.IP) {
		t.Fatalf("container address %s outside the new network", c1.IP)
	}
	await.Eventually(t, 60*time.Second, "containers reach each other in the new network", func() error {
		return c.ping(c1.NS, c2.IP, lab.PingOptions{Count: 1})
	})
}
