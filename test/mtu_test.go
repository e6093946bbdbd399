package test

import (
	"fmt"
	"testing"
	"time"

	"github.com/netagent/netagent/internal/await"
	"github.com/netagent/netagent/internal/lab"
)

// TestExternalMTUChange: when the external interface's MTU changes, the
// agent follows without a restart: the vxlan device and the subnet file get
// the new overlay MTU, and the lease stays the same.
func TestExternalMTUChange(t *testing.T) {
	t.Parallel()
	c := newCluster(t, clusterOptions{Hosts: 2, Config: vxlanConfig})
	infos := c.startAll()
	c.awaitReady()
	h1 := c.hosts()[0]
	p := c.agent(h1)
	c.mustExec(h1.NS, "ip", "link", "set", "eth0", "mtu", "1400")
	await.Eventually(t, 60*time.Second, "subnet file with MTU 1350", func() error {
		info, err := lab.AwaitSubnetFile(c.ctx, h1)
		if err != nil {
			return err
		}
		if info.MTU != 1350 {
			return fmt.Errorf("FLANNEL_MTU=%d", info.MTU)
		}
		if info.Subnet != infos[h1.Name].Subnet {
			return fmt.Errorf("lease moved from %s to %s", infos[h1.Name].Subnet, info.Subnet)
		}
		return nil
	})
	nh := c.handle(h1.NS)
	await.Eventually(t, 60*time.Second, "flannel.1 with MTU 1350", func() error {
		l, err := nh.LinkByName("flannel.1")
		if err != nil {
			return err
		}
		if l.Attrs().MTU != 1350 {
			return fmt.Errorf("flannel.1 MTU %d", l.Attrs().MTU)
		}
		return nil
	})
	if p.Exited() {
		t.Fatalf("agent exited:\n%s", p.Tail(20))
	}
}
