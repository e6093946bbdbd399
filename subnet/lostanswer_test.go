package subnet

import (
	"context"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

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
}

func (la *lostAnswers) arm(late bool) {
	la.mu.Lock()
	defer la.mu.Unlock()
	la.armed, la.late = true, late
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
			srv := etcdtest.Start(t)
			plain := srv.Client(t)
			la := &lostAnswers{}
			cli := etcdtest.NewClient(t, srv.Endpoints(), func(c *clientv3.Config) {
				c.DialOptions = append(c.DialOptions, grpc.WithChainUnaryInterceptor(la.intercept))
			})
			r := NewRegistry(cli, "/test/"+strings.ReplaceAll(t.Name(), "/", "_"), slog.New(&regTestLog{}))
			cfg := regTestConfig("10.5.0.0/16", 24, "10.5.1.0", "10.5.20.0")
			ctx := regTestCtx(t, 2*regTestWait)

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

			// And the host gets its subnet back as usual.
			if l, err := r.TryAcquire(ctx, cfg, regTestOpts(1)); err != nil || l.Subnet != first.Subnet {
				t.Errorf("next acquisition: %s, %v; want %s", l.Subnet, err, first.Subnet)
			}
		})
	}
}

// TestLostCreateAnswer: when the answer to the Txn that writes a new key
// for this host is lost and the Txn lands only later, the host still ends
// up with one key, and the etcd lease of the lost write does not outlive
// the next attempt: without the revocation, the late key would hold a
// second subnet for a day.
func TestLostCreateAnswer(t *testing.T) {
	srv := etcdtest.Start(t)
	plain := srv.Client(t)
	la := &lostAnswers{}
	cli := etcdtest.NewClient(t, srv.Endpoints(), func(c *clientv3.Config) {
		c.DialOptions = append(c.DialOptions, grpc.WithChainUnaryInterceptor(la.intercept))
	})
	r := NewRegistry(cli, "/test/"+t.Name(), slog.New(&regTestLog{}))
	cfg := regTestConfig("10.5.0.0/16", 24, "10.5.1.0", "10.5.20.0")
	ctx := regTestCtx(t, 2*regTestWait)

	la.arm(true)
	if l, err := r.TryAcquire(ctx, cfg, regTestOpts(1)); err == nil {
		t.Fatalf("TryAcquire with its Txn held back = %s; want an error", l.Subnet)
	}
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
	leases, err := plain.Leases(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(leases.Leases) != 1 {
		t.Errorf("%d etcd leases; want the held key's only", len(leases.Leases))
	}
}
