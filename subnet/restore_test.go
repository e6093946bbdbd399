package subnet

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"

	"github.com/netagent/netagent/internal/await"
	"github.com/netagent/netagent/internal/etcdtest"
)

// TestHolderRestores: a key deleted, or overwritten with a value that is
// neither a reservation nor another agent's lease with this host's public
// IP, while its etcd lease lives, is written back by the holder: same key,
// value and etcd lease, no new lease delivered, counted and logged.
func TestHolderRestores(t *testing.T) {
	t.Parallel()
	_, cli, r, log := regTestEnv(t)
	cfg := regTestConfig("10.5.0.0/16", 24, "10.5.1.0", "10.5.255.0")
	ctx := regTestCtx(t, 4*regTestWait)
	tests := []struct {
		name    string
		deleted bool
		spoil   func(key string, id clientv3.LeaseID) error
	}{
		{"admin deletes the key", true, func(key string, _ clientv3.LeaseID) error {
			_, err := cli.Delete(ctx, key)
			return err
		}},
		{"garbage value", false, func(key string, _ clientv3.LeaseID) error {
			_, err := cli.Put(ctx, key, "garbage")
			return err
		}},
		{"empty JSON object", false, func(key string, _ clientv3.LeaseID) error {
			_, err := cli.Put(ctx, key, "{}")
			return err
		}},
		{"garbage under this host's etcd lease", false, func(key string, id clientv3.LeaseID) error {
			_, err := cli.Put(ctx, key, `{"PublicIP":"127.0.0.1"}`, clientv3.WithLease(id))
			return err
		}},
		{"another host's value under another etcd lease", false, func(key string, _ clientv3.LeaseID) error {
			g, err := cli.Grant(ctx, 3600)
			if err != nil {
				return err
			}
			_, err = cli.Put(ctx, key, regTestValue(t, regTestOpts(99).Attrs), clientv3.WithLease(g.ID))
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
		before := regTestKVs(t, cli, r)[l.Key()]
		restores := r.Stats().LeaseRestores
		if err := tt.spoil(key, clientv3.LeaseID(before.Lease)); err != nil {
			t.Fatal(err)
		}
		await.Until(t, regTestWait, func() string {
			if r.Stats().LeaseRestores == restores {
				return tt.name + ": not restored"
			}
			return ""
		})
		kv := regTestKVs(t, cli, r)[l.Key()]
		switch {
		case kv == nil:
			t.Fatalf("%s: key gone after the restore", tt.name)
		case string(kv.Value) != string(before.Value) || kv.Lease != before.Lease:
			t.Errorf("%s: key is %q under etcd lease %x; want %q under %x", tt.name, kv.Value, kv.Lease, before.Value, before.Lease)
		case !tt.deleted && kv.CreateRevision != before.CreateRevision:
			t.Errorf("%s: key re-created at %d; want it overwritten in place (created at %d)", tt.name, kv.CreateRevision, before.CreateRevision)
		}
		if got := h.Lease(); got.Subnet != l.Subnet || got.CreateRevision != kv.CreateRevision {
			t.Errorf("%s: Lease() = %s created at %d; want %s created at %d", tt.name, got.Key(), got.CreateRevision, l.Key(), kv.CreateRevision)
		}
		select {
		case c := <-h.Changes():
			t.Errorf("%s: new lease %s delivered; want the old one restored", tt.name, c.Key())
		default:
		}
	}
	if st := r.Stats(); st.LeaseRestores != uint64(len(tests)) || st.LeaseLosses != 0 {
		t.Errorf("LeaseRestores = %d, LeaseLosses = %d; want %d and 0", st.LeaseRestores, st.LeaseLosses, len(tests))
	}
	if n := log.count("own subnet lease deleted or overwritten while its etcd lease lives: restored"); n != len(tests) {
		t.Errorf("%d restores logged, want %d:\n%s", n, len(tests), log)
	}
	if n := log.count("restored", `found_value="garbage"`); n != 1 {
		t.Errorf("the garbage value is named in %d restore warnings, want 1:\n%s", n, log)
	}

	// A restored lease stays restorable: the holder watches it again.
	h, err := r.Hold(ctx, cfg, regTestOpts(50))
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	l := h.Lease()
	key := r.SubnetsPrefix() + l.Key()
	restores := r.Stats().LeaseRestores
	for n := range 3 {
		if _, err := cli.Put(ctx, key, fmt.Sprintf("garbage %d", n)); err != nil {
			t.Fatal(err)
		}
		await.Until(t, regTestWait, func() string {
			if r.Stats().LeaseRestores != restores+uint64(n)+1 {
				return fmt.Sprintf("write %d not restored", n)
			}
			return ""
		})
	}
}

// writeBefore is a client interceptor that, once armed, runs a write
// before the next Txn is sent: a write that lands between the holder's
// read of its key and its restore.
type writeBefore struct {
	mu    sync.Mutex
	write func()
}

func (w *writeBefore) intercept(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
	if method == "/etcdserverpb.KV/Txn" {
		w.mu.Lock()
		f := w.write
		w.write = nil
		w.mu.Unlock()
		if f != nil {
			f()
		}
	}
	return invoker(ctx, method, req, reply, cc, opts...)
}

// TestHolderRestoreGuarded: a reservation put between the holder's read
// of its spoiled key and its restore is not overwritten: the restore's
// guard fails, the holder reads the key again and honours the
// reservation (here, for another host: it moves to another subnet).
func TestHolderRestoreGuarded(t *testing.T) {
	t.Parallel()
	srv := etcdtest.Start(t)
	plain := srv.Client(t)
	wb := &writeBefore{}
	cli := etcdtest.NewClient(t, srv.Endpoints(), func(c *clientv3.Config) {
		c.DialOptions = append(c.DialOptions, grpc.WithChainUnaryInterceptor(wb.intercept))
	})
	r := NewRegistry(cli, "/test/"+strings.ReplaceAll(t.Name(), "/", "_"), nil)
	cfg := regTestConfig("10.5.0.0/16", 24, "10.5.1.0", "10.5.255.0")
	ctx := regTestCtx(t, 2*regTestWait)
	h, err := r.Hold(ctx, cfg, regTestOpts(1))
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	l := h.Lease()
	key := r.SubnetsPrefix() + l.Key()
	reservation := regTestValue(t, regTestOpts(99).Attrs)
	wb.mu.Lock()
	wb.write = func() {
		if _, err := plain.Put(context.WithoutCancel(ctx), key, reservation); err != nil {
			t.Error(err)
		}
	}
	wb.mu.Unlock()
	if _, err := plain.Put(ctx, key, "garbage"); err != nil {
		t.Fatal(err)
	}
	select {
	case got := <-h.Changes():
		if got.Subnet == l.Subnet {
			t.Errorf("kept %s, reserved for another host", got.Subnet)
		}
	case <-time.After(regTestWait):
		t.Fatal("no new lease after the subnet was reserved for another host")
	}
	kv := regTestKVs(t, plain, r)[l.Key()]
	if kv == nil || string(kv.Value) != reservation || kv.Lease != 0 {
		t.Errorf("reservation overwritten: %v", kv)
	}
	if st := r.Stats(); st.LeaseRestores != 0 || st.LeaseLosses != 1 {
		t.Errorf("LeaseRestores = %d, LeaseLosses = %d; want 0 and 1", st.LeaseRestores, st.LeaseLosses)
	}
}
