package subnet

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/netagent/netagent/internal/await"
	"github.com/netagent/netagent/internal/etcdtest"
)

// TestHolderRenews: a held lease outlives two TTLs of its etcd lease,
// renewed before each expiry, and keeps its key and etcd lease; after
// Close the key is still there, and it expires since nothing renews it.
func TestHolderRenews(t *testing.T) {
	t.Parallel()
	_, cli, r, _ := regTestEnv(t)
	cfg := regTestConfig("10.5.0.0/16", 24, "10.5.1.0", "10.5.255.0")
	ctx := regTestCtx(t, 4*regTestWait)
	opts := regTestOpts(1)
	// Renewed every second, 5 s before expiry: a loaded machine can delay
	// renewals by seconds without the lease expiring.
	opts.TTL, opts.RenewMargin = 6*time.Second, 5*time.Second
	h, err := r.Hold(ctx, cfg, opts)
	if err != nil {
		t.Fatal(err)
	}
	l := h.Lease()
	acquired := h.LastRenewal()
	id := regTestKVs(t, cli, r)[l.Key()].Lease
	held := func() {
		t.Helper()
		if kv := regTestKVs(t, cli, r)[l.Key()]; kv == nil || kv.CreateRevision != l.CreateRevision || kv.Lease != id {
			t.Fatalf("%v after acquisition the key is %v; want it created at %d under etcd lease %x",
				time.Since(acquired).Round(time.Millisecond), kv, l.CreateRevision, id)
		}
		select {
		case c := <-h.Changes():
			t.Fatalf("lease changed to %s while held", c.Key())
		default:
		}
	}
	// Without renewals the etcd lease would have expired one TTL after
	// the acquisition; the wait ends when two have passed.
	await.Until(t, 2*opts.TTL+regTestWait, func() string {
		held()
		if n := r.Stats().Renewals; n < 4 || time.Since(acquired) <= 2*opts.TTL {
			return fmt.Sprintf("%d renewals %v after acquisition; want at least 4, and 2 TTLs passed", n, time.Since(acquired).Round(time.Millisecond))
		}
		return ""
	})
	held()
	// Expiration follows each renewal (read between two reads of
	// LastRenewal, in case a renewal falls in between).
	before := h.LastRenewal()
	e := h.Lease().Expiration
	after := h.LastRenewal()
	if !before.After(acquired) || e.Before(before.Add(opts.TTL)) || e.After(after.Add(opts.TTL)) {
		t.Errorf("Lease().Expiration %v, last renewals %v and %v (acquired %v): want a renewal plus the TTL %v", e, before, after, acquired, opts.TTL)
	}

	// Closed right after a renewal: the etcd lease has most of its TTL
	// left when the key is checked.
	renewals := r.Stats().Renewals
	await.Until(t, regTestWait, func() string {
		if r.Stats().Renewals == renewals {
			return "no renewal"
		}
		return ""
	})
	if err := h.Close(); err != nil {
		t.Fatal(err)
	}
	if regTestKVs(t, cli, r)[l.Key()] == nil {
		t.Fatal("key gone right after Close")
	}
	closed := time.Now()
	await.Until(t, opts.TTL+regTestWait, func() string {
		if kv := regTestKVs(t, cli, r)[l.Key()]; kv != nil {
			return fmt.Sprintf("key still there %v after Close (etcd lease %x)", time.Since(closed).Round(time.Millisecond), id)
		}
		return ""
	})
	if _, ok := <-h.Changes(); ok {
		t.Error("Changes() not closed after Close")
	}
	if n := r.Stats().LeaseLosses; n != 0 {
		t.Errorf("LeaseLosses = %d, want 0", n)
	}
}

// TestHolderReacquires: when the etcd lease is revoked, or the key turned
// into a reservation (for this host or another), the holder delivers a
// re-acquired lease on Changes(): of the same subnet, or another one when
// the reservation gives the subnet to another host. (A key deleted or
// overwritten while the etcd lease lives is written back instead:
// TestHolderRestores.)
func TestHolderReacquires(t *testing.T) {
	t.Parallel()
	_, cli, r, _ := regTestEnv(t)
	cfg := regTestConfig("10.5.0.0/16", 24, "10.5.1.0", "10.5.255.0")
	ctx := regTestCtx(t, 2*regTestWait)
	tests := []struct {
		name string
		lose func(key string, id clientv3.LeaseID) error
	}{
		{"etcd lease revoked", func(_ string, id clientv3.LeaseID) error {
			_, err := cli.Revoke(ctx, id)
			return err
		}},
		{"admin turns it into a reservation", func(key string, _ clientv3.LeaseID) error {
			_, err := cli.Put(ctx, key, regTestValue(t, regTestOpts(2).Attrs))
			return err
		}},
		{"admin gives it to another host", func(key string, _ clientv3.LeaseID) error {
			_, err := cli.Put(ctx, key, regTestValue(t, regTestOpts(99).Attrs))
			return err
		}},
	}
	for i, tt := range tests {
		h, err := r.Hold(ctx, cfg, regTestOpts(i+1)) // Host 2 is the reservation's.
		if err != nil {
			t.Fatal(err)
		}
		defer h.Close()
		l := h.Lease()
		key := r.SubnetsPrefix() + l.Key()
		kv := regTestKVs(t, cli, r)[l.Key()]
		if err := tt.lose(key, clientv3.LeaseID(kv.Lease)); err != nil {
			t.Fatal(err)
		}
		other := tt.name == "admin gives it to another host"
		select {
		case got := <-h.Changes():
			if (got.Subnet == l.Subnet) == other {
				t.Errorf("%s: re-acquired %s, had %s", tt.name, got.Key(), l.Key())
			}
			if other {
				l = got
			}
			if cur := h.Lease(); cur.Key() != got.Key() {
				t.Errorf("%s: Lease() = %s after Changes() delivered %s", tt.name, cur.Key(), got.Key())
			}
		case <-time.After(regTestWait):
			t.Fatalf("%s: no re-acquired lease", tt.name)
		}
		kv = regTestKVs(t, cli, r)[l.Key()]
		if kv == nil {
			t.Fatalf("%s: key not re-created", tt.name)
		}
		if tt.name == "admin turns it into a reservation" {
			// Taken as the reservation it now is.
			if kv.Lease != 0 || !h.Lease().Reservation {
				t.Errorf("%s: got etcd lease %x, reservation %v", tt.name, kv.Lease, h.Lease().Reservation)
			}
		} else if kv.Lease == 0 || kv.Value == nil {
			t.Errorf("%s: re-created key has no etcd lease", tt.name)
		}
	}
	// Each holder lost its lease once; Changes() delivered after the count.
	if n := r.Stats().LeaseLosses; n != uint64(len(tests)) {
		t.Errorf("LeaseLosses = %d, want %d", n, len(tests))
	}
}

// TestHolderSurvivesOutage: while etcd is unreachable past the renewal
// time the holder retries, and renews once it is back, keeping its lease.
func TestHolderSurvivesOutage(t *testing.T) {
	t.Parallel()
	srv, cli, r0, log := regTestEnv(t)
	proxy := etcdtest.NewProxy(t, srv.Addr())
	pcli := etcdtest.NewClient(t, proxy.Endpoints())
	r := NewRegistry(pcli, r0.prefix, r0.log)
	cfg := regTestConfig("10.5.0.0/16", 24, "10.5.1.0", "10.5.255.0")
	ctx := regTestCtx(t, 4*regTestWait)
	opts := regTestOpts(1)
	// Renewed every 2 s, 18 s before expiry: the outage, the client's
	// reconnection and a loaded machine all fit in the margin.
	opts.TTL, opts.RenewMargin = 20*time.Second, 18*time.Second
	h, err := r.Hold(ctx, cfg, opts)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	l := h.Lease()
	id := regTestKVs(t, cli, r)[l.Key()].Lease
	proxy.Cut()
	await.Until(t, regTestWait, func() string {
		if r.Stats().RenewalFailures == 0 {
			return "no renewal attempt failed during the outage"
		}
		return ""
	})
	// Attempts are made one at a time: none succeeds once one has failed
	// until the store is reachable again.
	renewals, before := r.Stats().Renewals, h.LastRenewal()
	proxy.Restore()
	await.Until(t, regTestWait, func() string {
		if r.Stats().Renewals == renewals {
			return "no renewal after the outage"
		}
		return ""
	})
	if !h.LastRenewal().After(before) {
		t.Errorf("LastRenewal %v after the outage, was %v", h.LastRenewal(), before)
	}
	// The warning precedes the renewal just counted, in the holder's loop.
	if log.count("cannot renew subnet lease: retrying", l.Key()) == 0 {
		t.Errorf("renewal failure not logged; log:\n%s", log)
	}
	select {
	case c := <-h.Changes():
		t.Fatalf("lease changed to %s over a short outage", c.Key())
	default:
	}
	if kv := regTestKVs(t, cli, r)[l.Key()]; kv == nil || kv.CreateRevision != l.CreateRevision || kv.Lease != id {
		t.Fatalf("key after the outage: %v; want it created at %d under etcd lease %x", kv, l.CreateRevision, id)
	}
	if n := r.Stats().LeaseLosses; n != 0 {
		t.Errorf("LeaseLosses = %d, want 0", n)
	}
}

// TestHolderStopsWithContext: the holder ends when Hold's context does.
func TestHolderStopsWithContext(t *testing.T) {
	t.Parallel()
	_, _, r, _ := regTestEnv(t)
	cfg := regTestConfig("10.5.0.0/16", 24, "10.5.1.0", "10.5.255.0")
	ctx, cancel := context.WithCancel(context.Background())
	h, err := r.Hold(ctx, cfg, regTestOpts(1))
	if err != nil {
		t.Fatal(err)
	}
	cancel()
	select {
	case <-h.Done():
	case <-time.After(regTestWait):
		t.Fatal("holder still running after its context ended")
	}
	if err := h.Close(); err != nil {
		t.Fatal(err)
	}
}

// TestHolderSamePublicIP: two agents configured with one public IP take
// the lease from each other. Each loss names the other writer and says
// where to look, and the losses are spaced out (a wait drawn from [d/2, d),
// d doubling from 1 s to 30 s, before each re-acquisition but the first)
// instead of turning into a write storm on etcd.
func TestHolderSamePublicIP(t *testing.T) {
	t.Parallel()
	_, cli, r0, _ := regTestEnv(t)
	cfg := regTestConfig("10.5.0.0/16", 24, "10.5.1.0", "10.5.255.0")
	ctx := regTestCtx(t, 4*regTestWait)
	// One Registry (and log) per agent, as on two hosts.
	logs := []*regTestLog{{}, {}}
	regs := []*Registry{NewRegistry(cli, r0.prefix, slog.New(logs[0])), NewRegistry(cli, r0.prefix, slog.New(logs[1]))}
	a, err := regs[0].Hold(ctx, cfg, regTestOpts(7))
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	b, err := regs[1].Hold(ctx, cfg, regTestOpts(7))
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if a.Lease().Subnet != b.Lease().Subnet {
		t.Fatalf("the second agent leased %s, not the first's %s: it should find it by the public IP", b.Lease().Subnet, a.Lease().Subnet)
	}
	const rounds = 4
	await.Until(t, regTestWait, func() string {
		if la, lb := regs[0].Stats().LeaseLosses, regs[1].Stats().LeaseLosses; la < rounds || lb < rounds {
			return fmt.Sprintf("the agents lost the lease %d and %d times; want them to keep taking it from each other, %d times each", la, lb, rounds)
		}
		return ""
	})
	a.Close()
	b.Close()
	for i, log := range logs {
		losses, at := log.matching("lost subnet lease")
		if uint64(len(losses)) != regs[i].Stats().LeaseLosses {
			t.Errorf("agent %d: %d losses logged, %d counted", i, len(losses), regs[i].Stats().LeaseLosses)
		}
		if hinted := log.count("lost subnet lease to another agent with this host's public IP", "new_public_ip=192.0.2.8"); hinted != len(losses) {
			t.Errorf("agent %d: %d losses, %d naming the public IP; want each loss explained:\n%s", i, len(losses), hinted, strings.Join(losses, "\n"))
		}
		// After its k-th loss (k ≥ 2) an agent waits at least 2^(k-2) × 0.5 s
		// before it takes the lease again, and so before it can lose it
		// again. Log times are taken by the agent's own goroutine.
		for k := 2; k < len(at); k++ {
			least := min(500*time.Millisecond<<(k-2), 15*time.Second)
			if gap := at[k].Sub(at[k-1]); gap < least {
				t.Errorf("agent %d: loss %d came %v after loss %d; want at least %v (spaced out by backoff)", i, k+1, gap, k, least)
			}
		}
	}
}
