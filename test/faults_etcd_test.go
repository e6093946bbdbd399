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
	"github.com/netagent/netagent/subnetfile"
)

// TestFaultEtcdDown (fault 1): etcd is killed and stays down, for more
// than a minute (75 s: more than two renewal periods) with leases of 3
// minutes, and for three times the lease TTL with leases of 10 s.
// Containers on two hosts ping each other all along and lose nothing;
// each agent logs the outage with backoff, not once per retry.
// etcd then comes back behind a partition of the hosts, the test adds one
// lease and deletes another, and the partition heals: the agents renew
// again, keep their subnets, and program exactly the leases in etcd.
// With the short TTL, one host is then partitioned from etcd for longer
// than its TTL: its lease expires, and once healed it takes the same subnet
// again and every host programs it.
func TestFaultEtcdDown(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name              string
		ttl, margin       time.Duration
		outage            time.Duration
		expireByPartition bool
	}{
		{"75s-outage-3m-ttl", 3 * time.Minute, 150 * time.Second, 75 * time.Second, false},
		{"30s-outage-10s-ttl", 10 * time.Second, 5 * time.Second, 30 * time.Second, true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c := newCluster(t, clusterOptions{Hosts: 2, Config: vxlanConfig, AgentArgs: []string{
				"--subnet-lease-ttl=" + tt.ttl.String(), "--subnet-lease-renew-margin=" + tt.margin.String(),
				healthzArgs[0], healthzArgs[1]}})
			infos := c.startAll()
			c.awaitReady()
			h1, h2 := c.hosts()[0], c.hosts()[1]
			c1, c2 := c.addContainer(h1), c.addContainer(h2)
			if err := c.ping(c1.NS, c2.IP, lab.PingOptions{Count: 2}); err != nil {
				t.Fatalf("before the outage: %v", err)
			}
			gone := fakePeer{netip.MustParsePrefix("10.5.250.0/24"), netip.MustParseAddr("192.168.77.250"), "0a:00:00:00:00:fa"}
			added := fakePeer{netip.MustParsePrefix("10.5.251.0/24"), netip.MustParseAddr("192.168.77.251"), "0a:00:00:00:00:fb"}
			putLease(t, c.etcd, leaseKey(gone.Subnet), gone.value(), 0)
			for _, h := range c.hosts() {
				awaitKernelPeers(t, c.handle(h.NS), wantKernelPeers(peersOf(hostLeases(t, c.etcd), infos[h.Name].Subnet)), 30*time.Second, h.Name+" programmed")
			}
			created := map[string]int64{}
			for _, h := range c.hosts() {
				_, created[h.Name] = agentLeaseID(t, c.etcd, leaseKey(infos[h.Name].Subnet))
			}

			const interval = 200 * time.Millisecond
			pr := startPing(t, c1.NS, c2.IP, interval, int((tt.outage+15*time.Second)/interval))
			marks := map[string]logMark{}
			for _, h := range c.hosts() {
				marks[h.Name] = markLog(t, c.agent(h))
			}
			if err := c.lab.KillEtcd(); err != nil {
				t.Fatal(err)
			}
			down := time.Now()
			<-time.After(tt.outage)

			// etcd comes back, but the hosts do not see it until the
			// test has changed the leases.
			for _, h := range c.hosts() {
				if err := c.lab.Partition(c.ctx, h.NS, lab.EtcdAddr); err != nil {
					t.Fatal(err)
				}
			}
			if err := c.lab.StartEtcd(c.ctx); err != nil {
				t.Fatal(err)
			}
			c.etcd = freshEtcdClient(t, c)
			putLease(t, c.etcd, leaseKey(added.Subnet), added.value(), 0)
			deleteKey(t, c.etcd, leaseKey(gone.Subnet))
			for _, h := range c.hosts() {
				if err := c.lab.Heal(c.ctx, h.NS); err != nil {
					t.Fatal(err)
				}
			}
			back := time.Now()
			t.Logf("etcd unreachable for %v", back.Sub(down).Round(time.Second))
			for _, h := range c.hosts() {
				s := countLog(logSince(t, marks[h.Name]))
				t.Logf("%s logged during the outage: %d lines (%d warn, %d error, %d info, %d debug)", h.Name, s.all, s.warn, s.errs, s.info, s.debug)
				if s.warn+s.errs == 0 {
					t.Errorf("%s logged no warning about the outage", h.Name)
				}
				// Backoff, not a flood: a bounded number of lines per
				// minute of outage, whatever the level.
				if limit := 10 + int(back.Sub(down)/time.Minute)*15; s.warn+s.errs > limit || s.all > 3*limit {
					t.Errorf("%s logged %d warnings and errors, %d lines in all, in %v: want at most %d and %d",
						h.Name, s.warn+s.errs, s.all, back.Sub(down).Round(time.Second), limit, 3*limit)
				}
			}

			// Caught up: exactly the leases in etcd, the added one in and
			// the deleted one out.
			for _, h := range c.hosts() {
				want := wantKernelPeers(peersOf(hostLeases(t, c.etcd), infos[h.Name].Subnet))
				awaitKernelPeers(t, c.handle(h.NS), want, 30*time.Second, h.Name+" caught up")
				t.Logf("%s caught up %v after the heal", h.Name, time.Since(back).Round(time.Millisecond))
			}
			t.Cleanup(func() {
				if t.Failed() {
					for _, h := range c.hosts() {
						t.Logf("%s's log since the outage:\n%s", h.Name, strings.Join(logSince(t, marks[h.Name]), "\n"))
					}
				}
			})
			for _, h := range c.hosts() {
				if tt.ttl < tt.outage {
					// Renewing again: the renewal counter moves on after
					// the heal.
					healed := metric(t, h, agent.MetricRenewals)
					await.Eventually(t, 2*time.Minute, h.Name+" renews its lease again", func() error {
						if n := metric(t, h, agent.MetricRenewals); n <= healed {
							return fmt.Errorf("%s = %v, as at the heal", agent.MetricRenewals, n)
						}
						return nil
					})
				}
				id, rev := agentLeaseID(t, c.etcd, leaseKey(infos[h.Name].Subnet))
				if id == 0 {
					t.Errorf("%s's lease %s is gone", h.Name, infos[h.Name].Subnet)
				} else if rev != created[h.Name] {
					t.Logf("%s re-acquired %s (created again at revision %d)", h.Name, infos[h.Name].Subnet, rev)
				}
				if info, err := subnetfile.Read(h.SubnetFile()); err != nil || info.Subnet != infos[h.Name].Subnet {
					t.Errorf("%s's subnet file: %+v, %v; want subnet %s", h.Name, info, err, infos[h.Name].Subnet)
				}
			}
			r := pr.wait(t)
			t.Logf("ping across the outage: %d sent, %d received", r.sent, r.received)
			if len(r.lost) > 0 || r.sent == 0 {
				t.Errorf("%d of %d pings lost across the etcd outage (icmp_seq %v)", len(r.lost), r.sent, r.lost)
			}
			if !tt.expireByPartition {
				return
			}

			// h1 is cut off from etcd for longer than its TTL: its lease
			// expires; once healed it takes the same subnet again.
			mine := leaseKey(infos[h1.Name].Subnet)
			mark := markLog(t, c.agent(h1))
			if err := c.lab.Partition(c.ctx, h1.NS, lab.EtcdAddr); err != nil {
				t.Fatal(err)
			}
			cut := time.Now()
			await.Eventually(t, tt.ttl+time.Minute, "h1's lease expired in etcd", func() error {
				if id, _ := agentLeaseID(t, c.etcd, mine); id != 0 {
					return fmt.Errorf("still there")
				}
				return nil
			})
			t.Logf("h1's lease expired %v after the partition", time.Since(cut).Round(time.Millisecond))
			<-time.After(2 * time.Second)
			if err := c.lab.Heal(c.ctx, h1.NS); err != nil {
				t.Fatal(err)
			}
			healed := time.Now()
			await.Eventually(t, 30*time.Second, "h1 holds its subnet again", func() error {
				if id, _ := agentLeaseID(t, c.etcd, mine); id == 0 {
					return fmt.Errorf("%s not re-acquired", mine)
				}
				return nil
			})
			t.Logf("h1 re-acquired %s %v after the heal", infos[h1.Name].Subnet, time.Since(healed).Round(time.Millisecond))
			awaitLog(t, c.agent(h1), mark, time.Minute, "lost subnet lease")
			for _, h := range c.hosts() {
				want := wantKernelPeers(peersOf(hostLeases(t, c.etcd), infos[h.Name].Subnet))
				awaitKernelPeers(t, c.handle(h.NS), want, 30*time.Second, h.Name+" converged after the expiry")
			}
			t.Logf("every host converged %v after the heal", time.Since(healed).Round(time.Millisecond))
			if err := c.ping(c1.NS, c2.IP, lab.PingOptions{Count: 2}); err != nil {
				t.Errorf("after h1 re-acquired its subnet: %v", err)
			}
			if info, err := subnetfile.Read(h1.SubnetFile()); err != nil || info.Subnet != infos[h1.Name].Subnet {
				t.Errorf("h1's subnet file: %+v, %v; want subnet %s", info, err, infos[h1.Name].Subnet)
			}
		})
	}
}
