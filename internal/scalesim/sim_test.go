package scalesim

import (
	"context"
	"net/netip"
	"os"
	"testing"
	"time"

	"github.com/netagent/netagent/internal/lab"
	"github.com/netagent/netagent/lease"
)

var labBin struct {
	path string
	err  error
}

func TestMain(m *testing.M) {
	code := func() int {
		if os.Geteuid() != 0 {
			return m.Run() // the test skips
		}
		dir, err := os.MkdirTemp("", "scalesim-bin-")
		if err != nil {
			labBin.err = err
			return m.Run()
		}
		defer os.RemoveAll(dir)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
		defer cancel()
		bins, err := lab.BuildBinaries(ctx, dir, "./cmd/netagent-lab")
		labBin.path, labBin.err = bins["./cmd/netagent-lab"], err
		return m.Run()
	}()
	os.Exit(code)
}

// TestSimInvariants: 200 simulated hosts boot at once against a 3-member
// etcd; each holds a distinct subnet, etcd holds exactly those leases and
// every watch converges to the full set. The same holds, with the same
// leases (none lost or re-acquired), after the etcd leader is killed and
// comes back, and after the whole cluster is killed and restarted.
func TestSimInvariants(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root for network namespaces")
	}
	if labBin.err != nil {
		t.Fatal(labBin.err)
	}
	const hosts = 200
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	s, err := Start(ctx, Options{Hosts: hosts, Namespaces: 3, LabBinary: labBin.path,
		TTL: time.Minute, RenewMargin: 30 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Error(err)
		}
	})
	for _, ns := range s.Lab.Namespaces() {
		if ns == "" {
			t.Fatal("a lab namespace without a name")
		}
	}
	s.Run(0, hosts)
	if err := s.AwaitConverged(ctx, hosts); err != nil {
		t.Fatalf("boot: %v", err)
	}
	if b := s.Counter.Snapshot().Methods["Range"]; b.Sent < hosts || b.RecvBytes == 0 {
		t.Errorf("boot: %d Range requests counted, %d bytes received; want at least %d and some", b.Sent, b.RecvBytes, hosts)
	}
	first := leases(s)
	if len(first) != hosts {
		t.Fatalf("%d distinct leases, want %d", len(first), hosts)
	}

	leader, err := s.Leader(ctx)
	if err != nil {
		t.Fatal(err)
	}
	before := s.Counter.Snapshot()
	if err := s.Cluster.Kill(leader); err != nil {
		t.Fatal(err)
	}
	if err := s.Cluster.Restart(ctx, leader); err != nil {
		t.Fatal(err)
	}
	// A write after the restart, seen by every watch, shows the watches
	// work again (not only that they still hold the old set).
	extra, err := s.AddHost()
	if err != nil {
		t.Fatal(err)
	}
	s.Run(hosts, hosts+1)
	if err := s.AwaitConverged(ctx, hosts+1); err != nil {
		t.Fatalf("after killing leader %s: %v", leader.Name, err)
	}
	if extra.Holder() == nil {
		t.Fatal("the host added after the leader kill holds no lease")
	}
	checkSame(t, "leader kill", first, leases(s))
	if d := s.Counter.Snapshot().Sub(before); d.Total().Sent == 0 {
		t.Error("no etcd request counted across the leader kill")
	}

	if err := s.RestartCluster(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := s.AddHost(); err != nil {
		t.Fatal(err)
	}
	s.Run(hosts+1, hosts+2)
	if err := s.AwaitConverged(ctx, hosts+2); err != nil {
		t.Fatalf("after restarting the cluster: %v", err)
	}
	checkSame(t, "cluster restart", first, leases(s))
	if n := s.Lost(); n != 0 {
		t.Errorf("%d leases lost and re-acquired", n)
	}
}

// leases maps each holding host to its lease key.
func leases(s *Sim) map[int]string {
	m := map[int]string{}
	seen := map[string]bool{}
	for _, h := range s.Hosts {
		if hd := h.Holder(); hd != nil {
			l := hd.Lease()
			k := l.Key()
			if !seen[k] {
				m[h.ID] = k
				seen[k] = true
			}
		}
	}
	return m
}

// checkSame fails unless every host of before holds the same key now.
func checkSame(t *testing.T, what string, before, now map[int]string) {
	t.Helper()
	for id, k := range before {
		if now[id] != k {
			t.Errorf("%s: host %d held %s, now %q", what, id, k, now[id])
		}
	}
}

// TestSink: the sink's set follows snapshots, additions (counted once
// when changed) and removals, and times the first arrival of a subnet.
func TestSink(t *testing.T) {
	cfg, err := lease.ParseConfig([]byte(DefaultConfig))
	if err != nil {
		t.Fatal(err)
	}
	k := newSink(cfg)
	p := func(s string) lease.Lease { return lease.Lease{Subnet: netip.MustParsePrefix(s)} }
	add := func(s string) lease.Event { return lease.Event{Type: lease.EventAdded, Lease: p(s)} }
	k.apply(lease.Batch{Snapshot: true, Events: []lease.Event{add("10.0.1.0/24"), add("10.255.255.0/24")}, Revision: 5})
	k.timeFor(netip.MustParsePrefix("10.3.0.0/24"))
	k.apply(lease.Batch{Events: []lease.Event{add("10.0.1.0/24"), add("10.3.0.0/24"),
		{Type: lease.EventRemoved, Lease: p("10.255.255.0/24")}}, Revision: 7})
	if k.Len() != 2 || !k.Has(netip.MustParsePrefix("10.3.0.0/24")) || k.Has(netip.MustParsePrefix("10.255.255.0/24")) || k.Revision() != 7 {
		t.Errorf("sink holds %d subnets at revision %d", k.Len(), k.Revision())
	}
	if k.seenAt.Load() == 0 {
		t.Error("the arrival of 10.3.0.0/24 was not timed")
	}
	k.apply(lease.Batch{Snapshot: true, Events: []lease.Event{add("10.9.0.0/24")}, Revision: 9})
	if k.Len() != 1 || k.Has(netip.MustParsePrefix("10.0.1.0/24")) {
		t.Errorf("after a snapshot of one subnet the sink holds %d", k.Len())
	}
	if b, e := k.Counts(); b != 3 || e != 6 {
		t.Errorf("counted %d batches, %d events; want 3, 6", b, e)
	}
}
