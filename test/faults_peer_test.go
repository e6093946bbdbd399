package test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/netagent/netagent/internal/await"
	"github.com/netagent/netagent/internal/lab"
)

// TestFaultPeerGone (fault 5): a host dies (its agent killed with SIGKILL)
// without deleting its lease. Its entries stay on every other host as long
// as the lease lives, and are removed on every host once etcd expires it.
func TestFaultPeerGone(t *testing.T) {
	t.Parallel()
	const ttl = 10 * time.Second
	c := newCluster(t, clusterOptions{Hosts: 3, Config: vxlanConfig,
		AgentArgs: []string{"--subnet-lease-ttl=" + ttl.String(), "--subnet-lease-renew-margin=5s"}})
	infos := c.startAll()
	c.awaitReady()
	h1, h2, h3 := c.hosts()[0], c.hosts()[1], c.hosts()[2]
	gone := infos[h3.Name].Subnet
	all := hostLeases(t, c.etcd)
	for _, h := range []*lab.Host{h1, h2} {
		awaitKernelPeers(t, c.handle(h.NS), wantKernelPeers(peersOf(all, infos[h.Name].Subnet)), 60*time.Second, h.Name+" programmed")
	}
	id, _ := agentLeaseID(t, c.etcd, leaseKey(gone))
	if err := c.agent(h3).Kill(); err != nil {
		t.Fatal(err)
	}
	killed := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	ttlResp, err := c.etcd.TimeToLive(ctx, id)
	cancel()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("h3 killed; its lease has %ds left", ttlResp.TTL)

	// While the lease lives, nothing is removed: h3's entries missing on
	// a host while etcd still holds its lease, read after the kernel,
	// were removed too early. Checked until etcd expires the lease.
	alive := func() bool {
		lid, _ := agentLeaseID(t, c.etcd, leaseKey(gone))
		return lid != 0
	}
	handles := map[*lab.Host]*netlink.Handle{h1: c.handle(h1.NS), h2: c.handle(h2.NS)}
	var expired time.Time
	await.Eventually(t, ttl+time.Minute, "h3's lease expired", func() error {
		for _, h := range []*lab.Host{h1, h2} {
			got, err := readKernelPeers(t, handles[h])
			if err != nil {
				t.Fatal(err)
			}
			if want := wantKernelPeers(peersOf(all, infos[h.Name].Subnet)); !got.equal(want) && alive() {
				t.Fatalf("%v after h3 died, with its lease alive, %s holds %v, want %v", time.Since(killed).Round(time.Millisecond), h.Name, got, want)
			}
		}
		if alive() {
			return fmt.Errorf("still there")
		}
		expired = time.Now()
		return nil
	})
	t.Logf("h3's lease expired %v after the kill", expired.Sub(killed).Round(time.Millisecond))
	for _, h := range []*lab.Host{h1, h2} {
		want := wantKernelPeers(peersOf(peersOf(all, gone), infos[h.Name].Subnet))
		awaitKernelPeers(t, c.handle(h.NS), want, 60*time.Second, h.Name+" removed h3")
		t.Logf("%s removed h3's entries %v after the expiry was seen", h.Name, time.Since(expired).Round(time.Millisecond))
	}
	c1, c2 := c.addContainer(h1), c.addContainer(h2)
	if err := c.ping(c1.NS, c2.IP, pingOpts2); err != nil {
		t.Errorf("h1 -> h2 after h3 is gone: %v", err)
	}
}
