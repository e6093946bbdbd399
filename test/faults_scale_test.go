package test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/netagent/netagent/internal/await"
	"github.com/netagent/netagent/lease"
	"github.com/netagent/netagent/subnet"
)

// TestFaultStampede (fault 3): 200 agents start at once against a pool of
// 64 subnets. Each is the agent's own lease code (subnet.Registry.Hold,
// which acquires, retries with backoff and renews) with its own etcd
// client, run as a goroutine against the lab's etcd process: 200 agent
// processes with their namespaces would cost minutes of CPU on a CI runner
// and test nothing more about the store. Exactly 64 hold a lease, every
// other reports the exhausted pool, and an invariant checker watching etcd
// for the whole run sees no subnet held twice, and no agent holding two,
// at any revision.
func TestFaultStampede(t *testing.T) {
	t.Parallel()
	const agents, pool = 200, 64
	c := newCluster(t, clusterOptions{Hosts: 1,
		Config: `{"Network":"10.6.0.0/16","SubnetMin":"10.6.1.0","SubnetMax":"10.6.64.0","Backend":{"Type":"vxlan"}}`})
	cfg, err := lease.ParseConfig([]byte(`{"Network":"10.6.0.0/16","SubnetMin":"10.6.1.0","SubnetMax":"10.6.64.0","Backend":{"Type":"vxlan"}}`))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.PoolSize() != pool {
		t.Fatalf("pool of %d subnets, want %d", cfg.PoolSize(), pool)
	}
	ctx, cancel := context.WithTimeout(c.ctx, 2*time.Minute)
	defer cancel()
	start, err := c.etcd.Get(ctx, "/")
	if err != nil {
		t.Fatal(err)
	}
	checker := watchInvariant(ctx, c.etcd, prefix+"/subnets/", start.Header.Revision+1)

	type agent struct {
		reg       *subnet.Registry
		holder    *subnet.Holder
		exhausted atomic.Int64
	}
	all := make([]*agent, agents)
	for i := range all {
		cli, err := c.lab.EtcdClient()
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cli.Close() })
		a := &agent{}
		a.reg = subnet.NewRegistry(cli, prefix, slog.New(&exhaustionCounter{n: &a.exhausted}))
		all[i] = a
	}
	go_ := make(chan struct{})
	var wg sync.WaitGroup
	var mu sync.Mutex
	for i, a := range all {
		wg.Go(func() {
			<-go_
			opts := subnet.AcquireOptions{
				Attrs: lease.LeaseAttrs{
					PublicIP:    netip.AddrFrom4([4]byte{172, 20, byte(i / 250), byte(1 + i%250)}),
					BackendType: "vxlan",
					BackendData: []byte(fmt.Sprintf(`{"VNI":1,"VtepMAC":"0a:00:00:00:%02x:%02x"}`, i>>8, i&0xff)),
				},
				TTL: time.Minute, RenewMargin: 30 * time.Second,
			}
			h, err := a.reg.Hold(ctx, cfg, opts)
			if err != nil {
				return // ctx done: this agent never got a subnet
			}
			mu.Lock()
			a.holder = h
			mu.Unlock()
		})
	}
	began := time.Now()
	close(go_)
	held := func() (n int) {
		mu.Lock()
		defer mu.Unlock()
		for _, a := range all {
			if a.holder != nil {
				n++
			}
		}
		return n
	}
	await.Eventually(t, 60*time.Second, "64 agents hold a lease, the others report exhaustion", func() error {
		reported := 0
		for _, a := range all {
			if a.exhausted.Load() > 0 {
				reported++
			}
		}
		if n := held(); n != pool || reported != agents-pool {
			return fmt.Errorf("%d hold a lease, %d reported exhaustion", n, reported)
		}
		return nil
	})
	t.Logf("%d agents: %d leases held and %d exhaustion reports after %v", agents, pool, agents-pool, time.Since(began).Round(time.Millisecond))
	// And it stays so while the losers keep retrying.
	<-time.After(3 * time.Second)
	if n := held(); n != pool {
		t.Errorf("%d agents hold a lease, want %d", n, pool)
	}
	mu.Lock()
	holders := map[string]netip.Addr{}
	for _, a := range all {
		if a.holder != nil {
			l := a.holder.Lease()
			if _, dup := holders[l.Key()]; dup {
				t.Errorf("two agents hold %s", l.Key())
			}
			holders[l.Key()] = l.Attrs.PublicIP
		}
	}
	mu.Unlock()
	resp, err := c.etcd.Get(ctx, prefix+"/subnets/", clientv3.WithPrefix())
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Kvs) != pool {
		t.Errorf("%d leases in etcd, want %d", len(resp.Kvs), pool)
	}
	for _, kv := range resp.Kvs {
		k := strings.TrimPrefix(string(kv.Key), prefix+"/subnets/")
		a, err := lease.ParseLeaseAttrs(kv.Value)
		if err != nil || holders[k] != a.PublicIP {
			t.Errorf("lease %s in etcd names %v (%v), its holder is %v", k, a.PublicIP, err, holders[k])
		}
	}
	cancel()
	wg.Wait()
	for _, a := range all {
		if a.holder != nil {
			a.holder.Close()
		}
	}
	rep := <-checker
	t.Logf("invariant checker: %d revisions checked, at most %d leases at once", rep.revisions, rep.maxLeases)
	for _, v := range rep.violations {
		t.Error(v)
	}
	if rep.revisions < pool {
		t.Errorf("the checker saw %d revisions, fewer than the %d creations", rep.revisions, pool)
	}
}

// exhaustionCounter is a slog.Handler counting the records that report an
// exhausted pool.
type exhaustionCounter struct{ n *atomic.Int64 }

func (h *exhaustionCounter) Enabled(context.Context, slog.Level) bool { return true }
func (h *exhaustionCounter) WithAttrs([]slog.Attr) slog.Handler       { return h }
func (h *exhaustionCounter) WithGroup(string) slog.Handler            { return h }
func (h *exhaustionCounter) Handle(_ context.Context, r slog.Record) error {
	r.Attrs(func(a slog.Attr) bool {
		if err, ok := a.Value.Any().(error); ok && errors.Is(err, subnet.ErrPoolExhausted) {
			h.n.Add(1)
		}
		return true
	})
	return nil
}

type invariantReport struct {
	revisions, maxLeases int
	violations           []string
}

// watchInvariant watches every lease under dir from revision rev until ctx
// is done, and checks after each revision that no two keys hold
// overlapping subnets and no public IP holds two keys.
func watchInvariant(ctx context.Context, cli *clientv3.Client, dir string, rev int64) <-chan invariantReport {
	out := make(chan invariantReport, 1)
	go func() {
		var rep invariantReport
		defer func() { out <- rep }()
		state := map[string]netip.Addr{} // key -> public IP
		check := func(r int64) {
			rep.revisions++
			rep.maxLeases = max(rep.maxLeases, len(state))
			byIP := map[netip.Addr]string{}
			var subnets []netip.Prefix
			for k, ip := range state {
				v4, _, err := lease.ParseLeaseKey(strings.TrimPrefix(k, dir))
				if err != nil {
					rep.violations = append(rep.violations, fmt.Sprintf("revision %d: malformed key %s", r, k))
					continue
				}
				for _, o := range subnets {
					if o.Overlaps(v4) {
						rep.violations = append(rep.violations, fmt.Sprintf("revision %d: %s and %s overlap", r, o, v4))
					}
				}
				subnets = append(subnets, v4)
				if other, dup := byIP[ip]; dup {
					rep.violations = append(rep.violations, fmt.Sprintf("revision %d: %s holds %s and %s", r, ip, other, k))
				}
				byIP[ip] = k
			}
		}
		for wr := range cli.Watch(ctx, dir, clientv3.WithPrefix(), clientv3.WithRev(rev)) {
			if err := wr.Err(); err != nil {
				rep.violations = append(rep.violations, fmt.Sprintf("watch failed: %v", err))
				return
			}
			// Events of one revision (one transaction) are applied
			// together, then checked.
			for i := 0; i < len(wr.Events); {
				r := wr.Events[i].Kv.ModRevision
				for ; i < len(wr.Events) && wr.Events[i].Kv.ModRevision == r; i++ {
					ev := wr.Events[i]
					if ev.Type == clientv3.EventTypeDelete {
						delete(state, string(ev.Kv.Key))
						continue
					}
					a, err := lease.ParseLeaseAttrs(ev.Kv.Value)
					if err != nil {
						rep.violations = append(rep.violations, fmt.Sprintf("revision %d: %s: %v", r, ev.Kv.Key, err))
						continue
					}
					state[string(ev.Kv.Key)] = a.PublicIP
				}
				check(r)
			}
		}
	}()
	return out
}
