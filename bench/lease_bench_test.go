package bench

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"

	"github.com/netagent/netagent/internal/etcdtest"
	"github.com/netagent/netagent/lease"
	"github.com/netagent/netagent/subnet"
)

// leaseBenchConfig is 10.0.0.0/8 cut into /24s: 65,535 subnets.
func leaseBenchConfig() *lease.Config {
	return &lease.Config{
		EnableIPv4:  true,
		Network:     netip.MustParsePrefix("10.0.0.0/8"),
		SubnetLen:   24,
		SubnetMin:   netip.MustParsePrefix("10.0.1.0/24"),
		SubnetMax:   netip.MustParsePrefix("10.255.255.0/24"),
		BackendType: "vxlan",
		Backend:     json.RawMessage(`{"Type":"vxlan"}`),
	}
}

// leaseBenchOpts are host n's options (PublicIP 100.64.x.y: unique for
// n < 65536).
func leaseBenchOpts(n int) subnet.AcquireOptions {
	return subnet.AcquireOptions{
		Attrs: lease.LeaseAttrs{
			PublicIP:    netip.AddrFrom4([4]byte{100, 64 + byte(n>>16), byte(n >> 8), byte(n)}),
			BackendType: "vxlan",
			BackendData: json.RawMessage(fmt.Sprintf(`{"VNI":1,"VtepMAC":"02:00:00:%02x:%02x:%02x"}`, n>>16&0xff, n>>8&0xff, n&0xff)),
		},
		TTL:         time.Hour,
		RenewMargin: 10 * time.Minute,
	}
}

// BenchmarkLeaseAcquire1000: 1,000 agents acquire distinct /24s of
// 10.0.0.0/8 from one etcd, 64 at a time, each worker with its own client.
func BenchmarkLeaseAcquire1000(b *testing.B) {
	const agents, workers = 1000, 64
	srv := etcdtest.Start(b)
	clients := make([]*clientv3.Client, workers)
	for i := range clients {
		clients[i] = srv.Client(b)
	}
	cfg := leaseBenchConfig()
	ctx := context.Background()
	var conflicts atomic.Int64
	iter := 0
	for b.Loop() {
		iter++
		prefix := fmt.Sprintf("/bench%d", iter)
		next := atomic.Int64{}
		var wg sync.WaitGroup
		errs := make(chan error, workers)
		for w := range workers {
			r := subnet.NewRegistry(clients[w], prefix, nil)
			wg.Go(func() {
				for n := int(next.Add(1)) - 1; n < agents; n = int(next.Add(1)) - 1 {
					for {
						_, err := r.TryAcquire(ctx, cfg, leaseBenchOpts(n))
						if errors.Is(err, subnet.ErrLeaseConflict) {
							conflicts.Add(1)
							continue
						}
						if err != nil {
							errs <- err
							return
						}
						break
					}
				}
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			b.Fatal(err)
		}
		b.StopTimer()
		leases, _, err := subnet.NewRegistry(clients[0], prefix, nil).Leases(ctx)
		if err != nil {
			b.Fatal(err)
		}
		seen := map[netip.Prefix]bool{}
		for _, l := range leases {
			seen[l.Subnet] = true
		}
		if len(leases) != agents || len(seen) != agents {
			b.Fatalf("%d leases of %d distinct subnets, want %d", len(leases), len(seen), agents)
		}
		b.StartTimer()
	}
	b.ReportMetric(float64(b.Elapsed().Milliseconds())/float64(b.N), "ms/1000-agents")
	b.ReportMetric(float64(conflicts.Load())/float64(b.N), "conflicts/op")
}

// requestCounter counts the gRPC requests a client sends: unary calls and
// streams opened (retries by clientv3 count again).
type requestCounter struct{ n atomic.Int64 }

func (c *requestCounter) dialOptions() []grpc.DialOption {
	return []grpc.DialOption{
		grpc.WithChainUnaryInterceptor(func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
			c.n.Add(1)
			return invoker(ctx, method, req, reply, cc, opts...)
		}),
		grpc.WithChainStreamInterceptor(func(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
			c.n.Add(1)
			return streamer(ctx, desc, cc, method, opts...)
		}),
	}
}

// BenchmarkLeaseAcquireRequests counts the etcd requests of one
// acquisition by a new host when 5,000 leases exist.
func BenchmarkLeaseAcquireRequests(b *testing.B) {
	const existing = 5000
	srv := etcdtest.Start(b)
	admin := srv.Client(b)
	var counter requestCounter
	cli := etcdtest.NewClient(b, srv.Endpoints(), func(c *clientv3.Config) { c.DialOptions = counter.dialOptions() })
	ctx := context.Background()
	cfg := leaseBenchConfig()
	r := subnet.NewRegistry(cli, "/bench", nil)

	grant, err := admin.Grant(ctx, 3600)
	if err != nil {
		b.Fatal(err)
	}
	var ops []clientv3.Op
	flush := func() {
		if _, err := admin.Txn(ctx).Then(ops...).Commit(); err != nil {
			b.Fatal(err)
		}
		ops = ops[:0]
	}
	for n := range existing {
		o := leaseBenchOpts(n)
		v, err := o.Attrs.MarshalJSON()
		if err != nil {
			b.Fatal(err)
		}
		sub := netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte((n + 1) >> 8), byte(n + 1), 0}), 24)
		ops = append(ops, clientv3.OpPut(r.SubnetsPrefix()+lease.LeaseKey(sub, netip.Prefix{}), string(v), clientv3.WithLease(grant.ID)))
		if len(ops) == 100 {
			flush()
		}
	}
	flush()
	if leases, _, err := r.Leases(ctx); err != nil || len(leases) != existing {
		b.Fatalf("%d leases, %v", len(leases), err)
	}

	var requests int64
	n := existing
	for b.Loop() {
		before := counter.n.Load()
		l, err := r.TryAcquire(ctx, cfg, leaseBenchOpts(n))
		requests += counter.n.Load() - before
		if err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		// Keep the store at 5,000 leases.
		if _, err := admin.Delete(ctx, r.SubnetsPrefix()+l.Key()); err != nil {
			b.Fatal(err)
		}
		n++
		b.StartTimer()
	}
	b.ReportMetric(float64(requests)/float64(b.N), "requests/acquire")
}
