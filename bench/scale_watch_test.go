package bench

import (
	"context"
	"net/netip"
	"runtime"
	"testing"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/netagent/netagent/internal/etcdtest"
	"github.com/netagent/netagent/lease"
	"github.com/netagent/netagent/subnet"
)

// BenchmarkLeaseWatchHeap5000: the Go heap one lease watch keeps for 5,000
// peer leases once it has delivered its first snapshot (the receiver keeps
// the snapshot too, as the agent's data plane does until it has
// programmed it). It is the share of the agent's RSS with 5,000 peers that
// the lease layer accounts for; run with -memprofile to see by whom.
func BenchmarkLeaseWatchHeap5000(b *testing.B) {
	const peers = 5000
	srv := etcdtest.Start(b)
	cli := srv.Client(b)
	ctx := context.Background()
	const prefix = "/heap"
	var ops []clientv3.Op
	for n := range peers {
		v, err := leaseBenchOpts(n).Attrs.MarshalJSON()
		if err != nil {
			b.Fatal(err)
		}
		sn := netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte((n + 1) >> 8), byte(n + 1), 0}), 24)
		ops = append(ops, clientv3.OpPut(prefix+"/subnets/"+lease.LeaseKey(sn, netip.Prefix{}), string(v)))
		if len(ops) == 100 || n == peers-1 {
			if _, err := cli.Txn(ctx).Then(ops...).Commit(); err != nil {
				b.Fatal(err)
			}
			ops = ops[:0]
		}
	}
	reg := subnet.NewRegistry(cli, prefix, nil)
	var heap, snapshot uint64
	for b.Loop() {
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		wctx, cancel := context.WithCancel(ctx)
		first := <-reg.WatchLeases(wctx)
		if !first.Snapshot || len(first.Events) != peers {
			b.Fatalf("first batch: snapshot %v with %d leases, want %d", first.Snapshot, len(first.Events), peers)
		}
		runtime.GC()
		runtime.ReadMemStats(&after)
		heap += after.HeapAlloc - before.HeapAlloc
		runtime.KeepAlive(first)
		first = lease.Batch{}
		runtime.GC()
		var dropped runtime.MemStats
		runtime.ReadMemStats(&dropped)
		snapshot += after.HeapAlloc - dropped.HeapAlloc
		cancel()
	}
	n := float64(b.N)
	b.ReportMetric(float64(heap)/n/1e6, "heap-MB")
	b.ReportMetric(float64(snapshot)/n/1e6, "snapshot-MB")
	b.ReportMetric(float64(heap)/n/peers, "B/lease")
}
