package subnet

import (
	"context"
	"fmt"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/netagent/netagent/internal/etcdtest"
)

// TestHolderRenews: with a 5 s TTL a held lease lives through three TTLs,
// renewed each time before expiry; after Close it is still there, then
// expires about one TTL later.
func TestHolderRenews(t *testing.T) {
	t.Parallel()
	_, cli, r, _ := regTestEnv(t)
	cfg := regTestConfig("10.5.0.0/16", 24, "10.5.1.0", "10.5.255.0")
	ctx := regTestCtx(t, 60*time.Second)
	opts := regTestOpts(1)
	opts.TTL, opts.RenewMargin = 5*time.Second, 2*time.Second
	h, err := r.Hold(ctx, cfg, opts)
	if err != nil {
		t.Fatal(err)
	}
	l := h.Lease()
	start := time.Now()
	renewals := 0
	last := h.LastRenewal()
	for time.Since(start) < 3*opts.TTL+time.Second {
		kv := regTestKVs(t, cli, r)[l.Key()]
		if kv == nil || kv.CreateRevision != l.CreateRevision {
			t.Fatalf("after %v the key is %v", time.Since(start).Round(time.Millisecond), kv)
		}
		if lr := h.LastRenewal(); lr.After(last) {
			renewals++
			last = lr
		}
		select {
		case c := <-h.Changes():
			t.Fatalf("lease changed to %s while held", c.Key())
		case <-time.After(200 * time.Millisecond):
		}
	}
	if renewals < 4 {
		t.Errorf("%d renewals in %v, want at least 4 (every TTL-margin = 3s)", renewals, time.Since(start))
	}
	if e := h.Lease().Expiration; e.Before(time.Now()) || e.After(time.Now().Add(opts.TTL)) {
		t.Errorf("Lease().Expiration %v is not within the next TTL", e)
	}
	id := regTestKVs(t, cli, r)[l.Key()].Lease

	if err := h.Close(); err != nil {
		t.Fatal(err)
	}
	closed := time.Now()
	if regTestKVs(t, cli, r)[l.Key()] == nil {
		t.Fatal("key gone right after Close")
	}
	regTestAwait(t, opts.TTL+3*time.Second, func() string {
		if kv := regTestKVs(t, cli, r)[l.Key()]; kv != nil {
			return fmt.Sprintf("key still there %v after Close (etcd lease %x)", time.Since(closed).Round(time.Millisecond), id)
		}
		return ""
	})
	if _, ok := <-h.Changes(); ok {
		t.Error("Changes() not closed after Close")
	}
}

// TestHolderReacquires: when the key is deleted, its etcd lease revoked,
// or the key rewritten by someone else, the holder delivers a re-acquired
// lease of the same subnet on Changes().
func TestHolderReacquires(t *testing.T) {
	t.Parallel()
	_, cli, r, _ := regTestEnv(t)
	cfg := regTestConfig("10.5.0.0/16", 24, "10.5.1.0", "10.5.255.0")
	ctx := regTestCtx(t, 60*time.Second)
	tests := []struct {
		name string
		lose func(key string, id clientv3.LeaseID) error
	}{
		{"admin deletes the key", func(key string, _ clientv3.LeaseID) error {
			_, err := cli.Delete(ctx, key)
			return err
		}},
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
		h, err := r.Hold(ctx, cfg, regTestOpts(i))
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
		case <-time.After(5 * time.Second):
			t.Fatalf("%s: no re-acquired lease within 5s", tt.name)
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
	ctx := regTestCtx(t, 60*time.Second)
	opts := regTestOpts(1)
	opts.TTL, opts.RenewMargin = 8*time.Second, 6*time.Second // renew 2s after each renewal
	h, err := r.Hold(ctx, cfg, opts)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	l := h.Lease()
	cut := time.Now()
	proxy.Cut()
	regTestAwait(t, 10*time.Second, func() string {
		if log.count("cannot renew subnet lease") == 0 {
			return "no renewal failure logged during the outage; log:\n" + log.String()
		}
		return ""
	})
	before := h.LastRenewal()
	if !before.Before(cut) {
		t.Fatalf("renewed at %v during the outage (cut at %v)", before, cut)
	}
	proxy.Restore()
	regTestAwait(t, 10*time.Second, func() string {
		if !h.LastRenewal().After(before) {
			return "no renewal after the outage"
		}
		return ""
	})
	select {
	case c := <-h.Changes():
		t.Fatalf("lease changed to %s over a short outage", c.Key())
	default:
	}
	if kv := regTestKVs(t, cli, r)[l.Key()]; kv == nil || kv.CreateRevision != l.CreateRevision {
		t.Fatalf("key after the outage: %v", kv)
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
	case <-time.After(5 * time.Second):
		t.Fatal("holder still running 5s after its context ended")
	}
	if err := h.Close(); err != nil {
		t.Fatal(err)
	}
}

// TestHolderSamePublicIP: two agents configured with one public IP take
// the lease from each other. Each loss names the other writer and says
// where to look, and the losses are spaced out (1 s doubling to 30 s)
// instead of turning into a write storm on etcd.
func TestHolderSamePublicIP(t *testing.T) {
	t.Parallel()
	_, _, r, log := regTestEnv(t)
	cfg := regTestConfig("10.5.0.0/16", 24, "10.5.1.0", "10.5.255.0")
	ctx := regTestCtx(t, 60*time.Second)
	a, err := r.Hold(ctx, cfg, regTestOpts(7))
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	start := time.Now()
	b, err := r.Hold(ctx, cfg, regTestOpts(7))
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if a.Lease().Subnet != b.Lease().Subnet {
		t.Fatalf("the second agent leased %s, not the first's %s: it should find it by the public IP", b.Lease().Subnet, a.Lease().Subnet)
	}
	const window = 10 * time.Second
	<-time.After(window - time.Since(start))
	losses := log.count("lost subnet lease")
	hinted := log.count("lost subnet lease to another agent with this host's public IP", "new_public_ip=192.0.2.8")
	t.Logf("%d losses in %v, %d with the public IP hint", losses, window, hinted)
	if losses < 3 || hinted != losses {
		t.Errorf("%d losses, %d naming the public IP; want the agents to keep taking the lease from each other, each loss explained", losses, hinted)
	}
	// Unspaced, each round trip takes a few milliseconds: thousands.
	if losses > 14 {
		t.Errorf("%d losses in %v; want them spaced out (at most about 2 per doubling interval)", losses, window)
	}
}
