package test

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/netagent/netagent/agent"
	"github.com/netagent/netagent/internal/await"
	"github.com/netagent/netagent/internal/lab"
)

// TestFaultEtcdCluster (fault 2): a 3-member etcd cluster, each member in
// its own namespace. Killing a member that h1's agent is connected to
// changes nothing visible: leases are renewed through the others, a lease
// added right after the kill is programmed on every host within seconds,
// and no lease is lost. Then h1 is partitioned from every member: its
// data plane keeps carrying traffic, and once the partition heals it
// catches up with the leases added and removed meanwhile. Containers on
// h1 and h2 ping each other throughout and lose nothing.
func TestFaultEtcdCluster(t *testing.T) {
	t.Parallel()
	c := newBareCluster(t, clusterOptions{Hosts: 2})
	ec, err := c.lab.StartEtcdCluster(c.ctx, 3)
	if err != nil {
		t.Fatal(err)
	}
	cli, err := ec.Client()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	c.etcd = cli
	c.put(prefix+"/config", vxlanConfig)
	c.opts.AgentArgs = []string{"--etcd-endpoints=" + strings.Join(ec.Endpoints(), ","),
		"--subnet-lease-ttl=30s", "--subnet-lease-renew-margin=25s"}
	c.opts.AgentArgs = append(c.opts.AgentArgs, healthzArgs...)
	infos := c.startAll()
	c.awaitReady()
	h1, h2 := c.hosts()[0], c.hosts()[1]
	c1, c2 := c.addContainer(h1), c.addContainer(h2)
	if err := c.ping(c1.NS, c2.IP, pingOpts2); err != nil {
		t.Fatal(err)
	}
	created := map[string]int64{}
	for _, h := range c.hosts() {
		_, created[h.Name] = agentLeaseID(t, c.etcd, leaseKey(infos[h.Name].Subnet))
	}
	converged := func(h *lab.Host, timeout time.Duration, what string) time.Duration {
		t.Helper()
		want := wantKernelPeers(peersOf(hostLeases(t, c.etcd), infos[h.Name].Subnet))
		return awaitKernelPeers(t, c.handle(h.NS), want, timeout, what)
	}
	pr := startPing(t, c1.NS, c2.IP, 100*time.Millisecond, 2000)

	// Kill the member h1 is connected to (the first of those it has a
	// connection with).
	var victim *lab.EtcdMember
	await.Eventually(t, 30*time.Second, "h1's connections to etcd", func() error {
		out := c.mustExec(h1.NS, "ss", "-Htn", "state", "established", "dport", "=", fmt.Sprint(lab.EtcdClientPort))
		for _, m := range ec.Members {
			if strings.Contains(out, " "+m.Addr.String()+":") {
				victim = m
				return nil
			}
		}
		return fmt.Errorf("no connection to a member:\n%s", out)
	})
	mark := markLog(t, c.agent(h1))
	renewed := metric(t, h1, agent.MetricRenewals)
	if err := ec.Kill(victim); err != nil {
		t.Fatal(err)
	}
	killed := time.Now()
	added := fakePeer{netip.MustParsePrefix("10.5.251.0/24"), netip.MustParseAddr("192.168.77.251"), "0a:00:00:00:00:fb"}
	putLease(t, c.etcd, leaseKey(added.Subnet), added.value(), 0)
	for _, h := range c.hosts() {
		converged(h, 60*time.Second, h.Name+" programs a lease added after the kill")
		t.Logf("%s programmed a lease added after %s was killed %v after the kill", h.Name, victim.Name, time.Since(killed).Round(time.Millisecond))
	}
	// Two renewals (one every 5 s) pass through the other members.
	await.Eventually(t, 2*time.Minute, "h1 renews twice after "+victim.Name+" was killed", func() error {
		if n := metric(t, h1, agent.MetricRenewals); n < renewed+2 {
			return fmt.Errorf("%s = %v, was %v at the kill", agent.MetricRenewals, n, renewed)
		}
		return nil
	})
	for _, h := range c.hosts() {
		if _, rev := agentLeaseID(t, c.etcd, leaseKey(infos[h.Name].Subnet)); rev != created[h.Name] {
			t.Errorf("%s's lease was lost after %s was killed (created at %d, now %d)", h.Name, victim.Name, created[h.Name], rev)
		}
	}
	if l := grep(logSince(t, mark), "lost subnet lease"); len(l) > 0 {
		t.Errorf("h1 lost its lease: %s", l[0])
	}
	if err := ec.Restart(c.ctx, victim); err != nil {
		t.Fatal(err)
	}

	// h1 is cut off from every member; h2 still reaches them.
	var addrs []netip.Addr
	for _, m := range ec.Members {
		addrs = append(addrs, m.Addr)
	}
	if err := c.lab.Partition(c.ctx, h1.NS, addrs...); err != nil {
		t.Fatal(err)
	}
	later := fakePeer{netip.MustParsePrefix("10.5.252.0/24"), netip.MustParseAddr("192.168.77.252"), "0a:00:00:00:00:fc"}
	putLease(t, c.etcd, leaseKey(later.Subnet), later.value(), 0)
	deleteKey(t, c.etcd, leaseKey(added.Subnet))
	converged(h2, 60*time.Second, "h2 follows the changes during h1's partition")
	<-time.After(15 * time.Second)
	if err := c.lab.Heal(c.ctx, h1.NS); err != nil {
		t.Fatal(err)
	}
	d := converged(h1, 60*time.Second, "h1 caught up after the partition")
	t.Logf("h1 caught up %v after the partition healed", d.Round(time.Millisecond))
	if _, rev := agentLeaseID(t, c.etcd, leaseKey(infos[h1.Name].Subnet)); rev != created[h1.Name] {
		t.Errorf("h1's lease was lost during the 15 s partition (created at %d, now %d)", created[h1.Name], rev)
	}
	pr.stop()
	r := pr.wait(t)
	t.Logf("ping through the member kill and the partition: %d sent, %d received", r.sent, r.received)
	if r.sent < 100 || len(r.lost) > 0 {
		t.Errorf("%d of %d pings lost (icmp_seq %v)", len(r.lost), r.sent, r.lost)
	}
}
