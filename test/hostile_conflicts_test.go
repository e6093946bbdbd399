package test

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/netagent/netagent/agent"
	"github.com/netagent/netagent/internal/await"
	"github.com/netagent/netagent/internal/lab"
	"github.com/netagent/netagent/lease"
)

// conflictCluster is a healthy 3-host vxlan cluster (IPv6 off) with a
// container on each host, the honest leases as they were before anything
// hostile happened, and the agents' PIDs, to tell that none restarts.
type conflictCluster struct {
	*cluster
	infos  map[string]netip.Prefix // host -> its subnet
	honest map[netip.Prefix]fakePeer
	ctns   []*container
	pids   map[string]int
}

func newConflictCluster(t *testing.T) *conflictCluster {
	t.Helper()
	c := newCluster(t, clusterOptions{Hosts: 3, Config: vxlanConfig, AgentArgs: healthzArgs})
	cc := &conflictCluster{cluster: c, infos: map[string]netip.Prefix{}, pids: map[string]int{}}
	for name, info := range c.startAll() {
		cc.infos[name] = info.Subnet
	}
	c.awaitReady()
	cc.honest = hostLeases(t, c.etcd)
	for _, h := range c.hosts() {
		cc.ctns = append(cc.ctns, c.addContainer(h))
		cc.pids[h.Name] = c.agent(h).PID()
	}
	cc.awaitHonest("before")
	c.pingMatrix(cc.ctns)
	return cc
}

// awaitHonest waits until every host's kernel holds exactly the honest
// leases of the other hosts.
func (cc *conflictCluster) awaitHonest(when string) {
	cc.t.Helper()
	for _, h := range cc.hosts() {
		awaitKernelPeers(cc.t, cc.handle(h.NS), wantKernelPeers(peersOf(cc.honest, cc.infos[h.Name])), 60*time.Second,
			fmt.Sprintf("%s: %s serves the honest leases", when, h.Name))
	}
}

// awaitRefused waits until every host's status refuses exactly the keys
// of want (relative key -> "reason<winner"), and its metric
// netagent_leases_refused counts them.
func (cc *conflictCluster) awaitRefused(want map[string]string) {
	cc.t.Helper()
	for _, h := range cc.hosts() {
		var last *agent.Report
		await.Eventually(cc.t, 60*time.Second, h.Name+" status names what it refuses", func() error {
			r, err := cc.statusReport(h)
			if err != nil {
				return err
			}
			last = r
			got := map[string]string{}
			for _, x := range r.Refused {
				got[x.Key] = x.Reason + "<" + x.Winner
			}
			if fmt.Sprint(got) != fmt.Sprint(want) {
				return fmt.Errorf("refused %v, want %v", got, want)
			}
			return nil
		})
		for _, x := range last.Refused {
			cc.t.Logf("%s refuses %s: %s", h.Name, x.Key, x.Detail)
		}
		await.Eventually(cc.t, 30*time.Second, h.Name+" metric of refused leases", func() error {
			if n := metric(cc.t, h, agent.MetricLeasesRefused); n != float64(len(want)) {
				return fmt.Errorf("%s = %v, want %d", agent.MetricLeasesRefused, n, len(want))
			}
			return nil
		})
		// `status --check` fails naming each refused key: a host this one
		// cannot reach.
		if len(want) > 0 {
			errOut, ok := cc.statusCheck(h)
			for key := range want {
				if ok || !strings.Contains(errOut, key) {
					cc.t.Errorf("%s: status --check exit ok=%t, stderr %q; want exit 1 naming refused %s", h.Name, ok, errOut, key)
				}
			}
		}
	}
}

// checkNoRestart fails the test if an agent exited or was replaced.
func (cc *conflictCluster) checkNoRestart() {
	cc.t.Helper()
	for _, h := range cc.hosts() {
		p := cc.agent(h)
		if p.Exited() || p.PID() != cc.pids[h.Name] {
			cc.t.Errorf("%s: agent restarted or exited (pid %d, was %d)", h.Name, p.PID(), cc.pids[h.Name])
		}
	}
}

// victim is the host whose lease the scenarios contest: the second.
func (cc *conflictCluster) victim() (*lab.Host, netip.Prefix, fakePeer) {
	h := cc.hosts()[1]
	sn := cc.infos[h.Name]
	return h, sn, cc.honest[sn]
}

// TestConflictDualStackKeyForLiveSubnet is scenario 1 of
// docs/reliability.md: with IPv6 off, a put of the dual-stack key form
// for a live host's subnet, with another PublicIP. Every host refuses it
// (the key names an IPv6 subnet the config does not enable) and keeps
// the honest lease; deleting it changes nothing; no agent restarts.
func TestConflictDualStackKeyForLiveSubnet(t *testing.T) {
	t.Parallel()
	cc := newConflictCluster(t)
	_, sn, _ := cc.victim()
	honestKey := lease.LeaseKey(sn, netip.Prefix{})
	badKey := lease.LeaseKey(sn, netip.MustParsePrefix("fd00:5::/64"))
	bad := fakePeer{Subnet: sn, PublicIP: netip.MustParseAddr("192.168.77.250"), MAC: "0a:00:00:00:0b:01"}
	putLease(t, cc.etcd, prefix+"/subnets/"+badKey, bad.value(), 0)

	cc.awaitRefused(map[string]string{badKey: "key-form<" + honestKey})
	cc.awaitHonest("with the bad key")
	cc.pingMatrix(cc.ctns)

	deleteKey(t, cc.etcd, prefix+"/subnets/"+badKey)
	cc.awaitRefused(map[string]string{})
	cc.awaitHonest("after the bad key was deleted")
	cc.pingMatrix(cc.ctns)
	cc.checkNoRestart()
}

// TestConflictCopiedVtepMAC is scenario 2 of docs/reliability.md: a lease
// for a free subnet that copies a live host's VtepMAC, with another
// PublicIP. Every host refuses it (the older key holds the MAC) and keeps
// the live host's fdb entry; deleting it leaves the entry in place; no
// agent restarts.
func TestConflictCopiedVtepMAC(t *testing.T) {
	t.Parallel()
	cc := newConflictCluster(t)
	_, sn, victim := cc.victim()
	honestKey := lease.LeaseKey(sn, netip.Prefix{})
	free := netip.MustParsePrefix("10.5.150.0/24")
	for s := range cc.honest {
		if s == free {
			t.Fatalf("test subnet %s is leased already", free)
		}
	}
	cloneKey := lease.LeaseKey(free, netip.Prefix{})
	clone := fakePeer{Subnet: free, PublicIP: netip.MustParseAddr("192.168.77.251"), MAC: victim.MAC}
	putLease(t, cc.etcd, prefix+"/subnets/"+cloneKey, clone.value(), 0)

	cc.awaitRefused(map[string]string{cloneKey: "identity<" + honestKey})
	cc.awaitHonest("with the clone")
	cc.pingMatrix(cc.ctns)
	for _, h := range cc.hosts() {
		r, err := cc.statusReport(h)
		if err != nil {
			t.Fatal(err)
		}
		if i := slices.IndexFunc(r.Refused, func(x agent.RefusedReport) bool { return x.Key == cloneKey }); i < 0 ||
			!strings.Contains(r.Refused[i].Detail, victim.MAC) {
			t.Errorf("%s: refusal of %s does not name the MAC %s: %+v", h.Name, cloneKey, victim.MAC, r.Refused)
		}
	}

	deleteKey(t, cc.etcd, prefix+"/subnets/"+cloneKey)
	cc.awaitRefused(map[string]string{})
	cc.awaitHonest("after the clone was deleted")
	cc.pingMatrix(cc.ctns)
	cc.checkNoRestart()
}
