package subnet

import (
	"context"
	"log/slog"
	"maps"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/netagent/netagent/internal/etcdtest"
	"github.com/netagent/netagent/lease"
)

// lostAnswers is a client interceptor that, once armed, makes the next
// lease Txn's answer get lost: the Txn reaches etcd either at once
// (applied, answer lost) or only when the acquirer next revokes an etcd
// lease, or when release is called (still on its way while the acquirer
// checks) — the order in which a Txn cut off by a SIGTERM or a broken
// connection can land.
type lostAnswers struct {
	mu    sync.Mutex
	armed bool
	late  bool
	held  []func()
	// calls counts the requests sent, by method.
	calls map[string]int
}

// count is how many requests of method (as "/etcdserverpb.KV/Txn") were
// sent.
func (la *lostAnswers) count(method string) int {
	la.mu.Lock()
	defer la.mu.Unlock()
	return la.calls[method]
}

func (la *lostAnswers) arm(late bool) {
	la.mu.Lock()
	defer la.mu.Unlock()
	la.armed, la.late = true, late
}

// failHeldBack makes host 1's next acquisition on r fail with its Txn held
// back (arm(true)).
func (la *lostAnswers) failHeldBack(ctx context.Context, t *testing.T, r *Registry, cfg *lease.Config) {
	t.Helper()
	la.arm(true)
	if l, err := r.TryAcquire(ctx, cfg, regTestOpts(1)); err == nil {
		t.Fatalf("TryAcquire with its Txn held back = %s; want an error", l.Subnet)
	}
}

// lostAnswerEnv starts etcd and returns a plain client of it, a Registry
// under the test's own prefix whose client runs intercept, a config and
// the test's context.
func lostAnswerEnv(t *testing.T, intercept grpc.UnaryClientInterceptor) (*clientv3.Client, *Registry, *lease.Config, context.Context) {
	t.Helper()
	srv := etcdtest.Start(t)
	cli := etcdtest.NewClient(t, srv.Endpoints(), func(c *clientv3.Config) {
		c.DialOptions = append(c.DialOptions, grpc.WithChainUnaryInterceptor(intercept))
	})
	r := NewRegistry(cli, "/test/"+strings.ReplaceAll(t.Name(), "/", "_"), slog.New(&regTestLog{}))
	return srv.Client(t), r, regTestConfig("10.5.0.0/16", 24, "10.5.1.0", "10.5.20.0"), regTestCtx(t, 2*regTestWait)
}

// release sends the Txns still held back.
func (la *lostAnswers) release() {
	la.mu.Lock()
	held := la.held
	la.held = nil
	la.mu.Unlock()
	for _, f := range held {
		f()
	}
}

func (la *lostAnswers) intercept(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
	la.mu.Lock()
	if la.calls == nil {
		la.calls = map[string]int{}
	}
	la.calls[method]++
	la.mu.Unlock()
	switch method {
	case "/etcdserverpb.KV/Txn":
		la.mu.Lock()
		armed, late := la.armed, la.late
		la.armed = false
		if armed && late {
			la.held = append(la.held, func() {
				_ = invoker(context.Background(), method, req, new(pb.TxnResponse), cc, opts...)
			})
		}
		la.mu.Unlock()
		if !armed {
			break
		}
		if !late {
			if err := invoker(ctx, method, req, reply, cc, opts...); err != nil {
				return err
			}
		}
		return status.Error(codes.Unavailable, "transport is closing")
	case "/etcdserverpb.Lease/LeaseRevoke":
		la.release()
	}
	return invoker(ctx, method, req, reply, cc, opts...)
}

// TestLostTxnAnswer: when the answer to the Txn that moves this host's
// key onto a new etcd lease is lost, the key is never deleted (peers
// would remove the host's routes), and when the Txn was applied the lease
// is held.
func TestLostTxnAnswer(t *testing.T) {
	for _, tt := range []struct {
		name string
		late bool // the Txn lands after the acquirer has looked
	}{
		{"applied, answer lost", false},
		{"applied late", true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			la := &lostAnswers{}
			plain, r, cfg, ctx := lostAnswerEnv(t, la.intercept)

			first, err := r.TryAcquire(ctx, cfg, regTestOpts(1))
			if err != nil {
				t.Fatal(err)
			}
			key := r.SubnetsPrefix() + lease.LeaseKey(first.Subnet, first.IPv6Subnet)
			watch := plain.Watch(ctx, key, clientv3.WithRev(first.ModRevision+1))

			la.arm(tt.late)
			again, err := r.TryAcquire(ctx, cfg, regTestOpts(1))
			la.release()
			switch {
			case !tt.late && err != nil:
				t.Fatalf("Txn applied, answer lost: TryAcquire = %v; want the lease held", err)
			case !tt.late:
				resp, err := plain.Get(ctx, key)
				if err != nil || len(resp.Kvs) != 1 {
					t.Fatalf("get %s: %v, %v", key, resp, err)
				}
				if kv := resp.Kvs[0]; again.Subnet != first.Subnet || again.ModRevision != kv.ModRevision {
					t.Errorf("held %s at revision %d; the key is at %d", again.Subnet, again.ModRevision, kv.ModRevision)
				}
			case err == nil:
				t.Fatalf("Txn held back: TryAcquire succeeded (%s)", again.Subnet)
			}

			// Every write to the key has landed by now; none was a delete.
			resp, err := plain.Get(ctx, key)
			if err != nil {
				t.Fatal(err)
			}
			if len(resp.Kvs) != 1 || resp.Kvs[0].CreateRevision != first.CreateRevision {
				t.Fatalf("%s was deleted or re-created: %v", key, resp.Kvs)
			}
			deadline := time.After(regTestWait)
			for done := false; !done; {
				select {
				case wr, ok := <-watch:
					if !ok || wr.Err() != nil {
						t.Fatalf("watch of %s ended: %v", key, wr.Err())
					}
					for _, ev := range wr.Events {
						if ev.Type == clientv3.EventTypeDelete {
							t.Errorf("%s was deleted at revision %d", key, ev.Kv.ModRevision)
						}
						if ev.Kv.ModRevision >= resp.Header.Revision {
							done = true
						}
					}
				case <-deadline:
					t.Fatalf("watch of %s: no event up to revision %d", key, resp.Header.Revision)
				}
			}

			// And the host gets its subnet back: a Txn that landed late
			// is taken as it is, with no Grant nor Txn.
			grants, txns := la.count(methodGrant), la.count(methodTxn)
			if l, err := r.TryAcquire(ctx, cfg, regTestOpts(1)); err != nil || l.Subnet != first.Subnet {
				t.Errorf("next acquisition: %s, %v; want %s", l.Subnet, err, first.Subnet)
			}
			if g, x := la.count(methodGrant)-grants, la.count(methodTxn)-txns; tt.late && (g != 0 || x != 0) {
				t.Errorf("next acquisition after the late Txn landed: %d LeaseGrant, %d Txn; want the key taken as it is", g, x)
			}
			// Every etcd lease that holds no key is revoked.
			regTestEtcdLeases(t, plain, 1)
		})
	}
}

const (
	methodGrant = "/etcdserverpb.Lease/LeaseGrant"
	methodTxn   = "/etcdserverpb.KV/Txn"
)

// regTestEtcdLeases fails t unless etcd holds want etcd leases.
func regTestEtcdLeases(t *testing.T, cli *clientv3.Client, want int) {
	t.Helper()
	leases, err := cli.Leases(regTestCtx(t, regTestWait))
	if err != nil {
		t.Fatal(err)
	}
	if len(leases.Leases) != want {
		t.Errorf("%d etcd leases; want %d (the held keys' only)", len(leases.Leases), want)
	}
}

// TestLostRenewAnswerRefused: a write moving this host's key onto a new
// etcd lease whose answer was lost, and which lands only after a later
// attempt moved the key again, is refused, and its etcd lease revoked
// once that later write is known to be applied: the key stays on the
// etcd lease held, and no etcd lease is left to expire.
func TestLostRenewAnswerRefused(t *testing.T) {
	la := &lostAnswers{}
	plain, r, cfg, ctx := lostAnswerEnv(t, la.intercept)

	first, err := r.TryAcquire(ctx, cfg, regTestOpts(1))
	if err != nil {
		t.Fatal(err)
	}
	la.failHeldBack(ctx, t, r, cfg)
	// The held-back Txn lands when this attempt revokes, after its own
	// Txn, or at the latest at release.
	again, err := r.TryAcquire(ctx, cfg, regTestOpts(1))
	if err != nil {
		t.Fatal(err)
	}
	la.release()
	if again.Subnet != first.Subnet {
		t.Fatalf("held %s; want %s again", again.Subnet, first.Subnet)
	}
	key := lease.LeaseKey(first.Subnet, first.IPv6Subnet)
	kvs := regTestKVs(t, plain, r)
	kv := kvs[key]
	if len(kvs) != 1 || kv == nil {
		t.Fatalf("keys %v; want only %s", slices.Collect(maps.Keys(kvs)), key)
	}
	if kv.ModRevision != again.ModRevision || kv.CreateRevision != first.CreateRevision {
		t.Errorf("%s at revision %d (created %d); held at %d (created %d): the late write was applied", key, kv.ModRevision, kv.CreateRevision, again.ModRevision, first.CreateRevision)
	}
	regTestEtcdLeases(t, plain, 1)
}

// TestLostCreateAnswerTaken: when the Txn writing a new key for this host
// lands after its answer was lost and after the acquirer looked, the next
// attempt finds the key on the etcd lease it granted and takes it as it is:
// no Grant, no Txn, no key deleted and written again.
func TestLostCreateAnswerTaken(t *testing.T) {
	la := &lostAnswers{}
	plain, r, cfg, ctx := lostAnswerEnv(t, la.intercept)

	la.failHeldBack(ctx, t, r, cfg)
	la.release()
	kvs := regTestKVs(t, plain, r)
	if len(kvs) != 1 {
		t.Fatalf("keys %v after the held-back Txn landed; want one", slices.Collect(maps.Keys(kvs)))
	}
	var landed *mvccpb.KeyValue
	for _, kv := range kvs {
		landed = kv
	}

	grants, txns := la.count(methodGrant), la.count(methodTxn)
	held, err := r.TryAcquire(ctx, cfg, regTestOpts(1))
	if err != nil {
		t.Fatal(err)
	}
	if g, x := la.count(methodGrant)-grants, la.count(methodTxn)-txns; g != 0 || x != 0 {
		t.Errorf("%d LeaseGrant, %d Txn; want the landed key taken as it is", g, x)
	}
	kvs = regTestKVs(t, plain, r)
	kv := kvs[lease.LeaseKey(held.Subnet, held.IPv6Subnet)]
	if len(kvs) != 1 || kv == nil || kv.CreateRevision != landed.CreateRevision || held.ModRevision != landed.ModRevision {
		t.Fatalf("held %s at revision %d; keys %v; want the landed %s at %d", held.Subnet, held.ModRevision, slices.Collect(maps.Keys(kvs)), landed.Key, landed.ModRevision)
	}
	regTestEtcdLeases(t, plain, 1)

	// It is held as any other: the next acquisition renews it.
	if l, err := r.TryAcquire(ctx, cfg, regTestOpts(1)); err != nil || l.Subnet != held.Subnet {
		t.Errorf("next acquisition: %s, %v; want %s", l.Subnet, err, held.Subnet)
	}
	regTestEtcdLeases(t, plain, 1)
}

// TestLostCreateAnswer: when the answer to the Txn that writes a new key
// for this host is lost and the Txn lands only later, the host still ends
// up with one key, and the etcd lease of the lost write does not outlive
// the next attempt: without the revocation, the late key would hold a
// second subnet for a day.
func TestLostCreateAnswer(t *testing.T) {
	la := &lostAnswers{}
	plain, r, cfg, ctx := lostAnswerEnv(t, la.intercept)

	la.failHeldBack(ctx, t, r, cfg)
	held, err := r.TryAcquire(ctx, cfg, regTestOpts(1))
	if err != nil {
		t.Fatal(err)
	}
	// Whatever was held back lands now, if it has not yet.
	la.release()

	kvs := regTestKVs(t, plain, r)
	if len(kvs) != 1 {
		t.Fatalf("keys %v; want only this host's one", slices.Collect(maps.Keys(kvs)))
	}
	if kv := kvs[lease.LeaseKey(held.Subnet, held.IPv6Subnet)]; kv == nil {
		t.Fatalf("keys %v; want %s", slices.Collect(maps.Keys(kvs)), held.Subnet)
	}
	regTestEtcdLeases(t, plain, 1)
}

// staleLists is a client interceptor that answers every serializable
// Range with a list read earlier (set), as a member that has not applied
// what was written since would: the list an acquisition may decide on.
type staleLists struct {
	mu     sync.Mutex
	old    *pb.RangeResponse
	served int
	// linearizable counts the Ranges sent to etcd as linearizable.
	linearizable int
}

func (sl *staleLists) set(old *clientv3.GetResponse) {
	sl.mu.Lock()
	defer sl.mu.Unlock()
	sl.old = (*pb.RangeResponse)(old)
}

func (sl *staleLists) counts() (served, linearizable int) {
	sl.mu.Lock()
	defer sl.mu.Unlock()
	return sl.served, sl.linearizable
}

func (sl *staleLists) intercept(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
	if method == "/etcdserverpb.KV/Range" {
		sl.mu.Lock()
		defer sl.mu.Unlock()
		if !req.(*pb.RangeRequest).Serializable {
			sl.linearizable++
		} else if sl.old != nil {
			sl.served++
			proto.Merge(reply.(*pb.RangeResponse), sl.old)
			return nil
		}
	}
	return invoker(ctx, method, req, reply, cc, opts...)
}

// TestStaleList: an acquisition's first list is serializable, so it may be
// stale; every decision taken on a stale list fails its Txn's compares,
// and the acquisition lists again, linearizably, and ends with one key per
// host and no etcd lease left over.
func TestStaleList(t *testing.T) {
	for _, tt := range []struct {
		name string
		// before runs on r before the stale list is read, during on r2
		// after: what the stale list misses. Each returns what the
		// acquirer on r passes as its previous subnet, and the subnet
		// it must end up with (invalid: any other than the previous).
		before, during func(ctx context.Context, t *testing.T, r, r2 *Registry) (netip.Prefix, netip.Prefix)
	}{
		{
			name: "another host took the subnet file's subnet",
			during: func(ctx context.Context, t *testing.T, r, r2 *Registry) (netip.Prefix, netip.Prefix) {
				l := regTestMustAcquire(ctx, t, r2, 2)
				return l.Subnet, netip.Prefix{}
			},
		},
		{
			name: "this host's own key, written by its previous run",
			during: func(ctx context.Context, t *testing.T, r, r2 *Registry) (netip.Prefix, netip.Prefix) {
				l := regTestMustAcquire(ctx, t, r2, 1)
				return l.Subnet, l.Subnet
			},
		},
		{
			name: "this host's own key, moved onto another etcd lease",
			before: func(ctx context.Context, t *testing.T, r, r2 *Registry) (netip.Prefix, netip.Prefix) {
				l := regTestMustAcquire(ctx, t, r2, 1)
				return l.Subnet, l.Subnet
			},
			during: func(ctx context.Context, t *testing.T, r, r2 *Registry) (netip.Prefix, netip.Prefix) {
				l := regTestMustAcquire(ctx, t, r2, 1)
				return l.Subnet, l.Subnet
			},
		},
	} {
		t.Run(tt.name, func(t *testing.T) {
			sl := &staleLists{}
			plain, r, cfg, ctx := lostAnswerEnv(t, sl.intercept)
			r2 := NewRegistry(plain, r.prefix, slog.New(&regTestLog{})) // another host, or this one's previous run

			if tt.before != nil {
				tt.before(ctx, t, r, r2)
			}
			old, err := plain.Get(ctx, r.SubnetsPrefix(), clientv3.WithPrefix())
			if err != nil {
				t.Fatal(err)
			}
			sl.set(old)
			prev, want := tt.during(ctx, t, r, r2)

			o := regTestOpts(1)
			o.Previous = prev
			l, err := r.TryAcquire(ctx, cfg, o)
			if err != nil {
				t.Fatal(err)
			}
			served, linearizable := sl.counts()
			if served != 1 || linearizable != 1 {
				t.Errorf("%d stale lists served, %d linearizable lists; want the stale one first, then one linearizable", served, linearizable)
			}
			if want.IsValid() && l.Subnet != want || !want.IsValid() && l.Subnet == prev {
				t.Errorf("acquired %s; want %s (previous %s)", l.Subnet, want, prev)
			}
			kvs := regTestKVs(t, plain, r)
			hosts := map[netip.Addr]int{}
			for _, kv := range kvs {
				a, err := lease.ParseLeaseAttrs(kv.Value)
				if err != nil {
					t.Fatal(err)
				}
				hosts[a.PublicIP]++
			}
			for ip, n := range hosts {
				if n != 1 {
					t.Errorf("%d keys for %s; want 1", n, ip)
				}
			}
			regTestEtcdLeases(t, plain, len(kvs))
		})
	}
}

// regTestMustAcquire acquires a lease for host n on r.
func regTestMustAcquire(ctx context.Context, t *testing.T, r *Registry, n int) lease.Lease {
	t.Helper()
	l, err := r.TryAcquire(ctx, regTestConfig("10.5.0.0/16", 24, "10.5.1.0", "10.5.20.0"), regTestOpts(n))
	if err != nil {
		t.Fatal(err)
	}
	return l
}
