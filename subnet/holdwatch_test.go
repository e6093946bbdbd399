package subnet

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"net/netip"
	"slices"
	"sync"
	"testing"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"

	"github.com/netagent/netagent/internal/etcdtest"
)

// prefixRanges is a client interceptor that counts the Range requests of a
// whole key prefix, and calls after (once, when set) right after the first
// one was answered.
type prefixRanges struct {
	prefix string
	mu     sync.Mutex
	n      int
	after  func()
}

func (pr *prefixRanges) count() int {
	pr.mu.Lock()
	defer pr.mu.Unlock()
	return pr.n
}

func (pr *prefixRanges) intercept(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
	err := invoker(ctx, method, req, reply, cc, opts...)
	rr, ok := req.(*pb.RangeRequest)
	if method != "/etcdserverpb.KV/Range" || !ok || string(rr.Key) != pr.prefix || len(rr.RangeEnd) == 0 {
		return err
	}
	pr.mu.Lock()
	pr.n++
	after := pr.after
	pr.after = nil
	pr.mu.Unlock()
	if after != nil {
		after()
	}
	return err
}

// TestHoldAndWatch: the watch's first Snapshot is the list the
// acquisition decided on (the only Range of every lease the start makes),
// and what is written between that list and the watch's start — a peer
// joining, this host's own lease — arrives as events.
func TestHoldAndWatch(t *testing.T) {
	t.Parallel()
	srv := etcdtest.Start(t)
	plain := srv.Client(t)
	prefix := "/test/" + t.Name()
	pr := &prefixRanges{prefix: prefix + "/subnets/"}
	cli := etcdtest.NewClient(t, srv.Endpoints(), func(c *clientv3.Config) {
		c.DialOptions = append(c.DialOptions, grpc.WithChainUnaryInterceptor(pr.intercept))
	})
	log := &regTestLog{}
	r := NewRegistry(cli, prefix, slog.New(log))
	cfg := regTestConfig("10.5.0.0/16", 24, "10.5.1.0", "10.5.20.0")
	ctx := regTestCtx(t, 2*regTestWait)
	val := func(n int) string { return regTestValue(t, regTestOpts(n).Attrs) }

	for _, n := range []int{1, 2, 3} {
		regTestPut(t, plain, r, fmt.Sprintf("10.5.%d.0-24", n), val(n), 60)
	}
	regTestPut(t, plain, r, "10.5.4.0-24", "not json", 0) // taken, not a peer
	// A peer that joins after the acquisition listed.
	pr.after = func() { regTestPut(t, plain, r, "10.5.9.0-24", val(9), 60) }

	// The subnet is chosen (a previous one, free), so that the
	// acquisition never draws 10.5.9.0/24, taken after its list: that
	// conflict would make it list again (1 run in 16).
	opts := regTestOpts(0)
	opts.Previous = netip.MustParsePrefix("10.5.10.0/24")
	holder, watch, err := r.HoldAndWatch(ctx, cfg, opts)
	if err != nil {
		t.Fatal(err)
	}
	defer holder.Close()
	own := holder.Lease()
	if s := own.Subnet.String(); slices.Contains([]string{"10.5.1.0/24", "10.5.2.0/24", "10.5.3.0/24", "10.5.4.0/24", "10.5.9.0/24"}, s) {
		t.Fatalf("acquired %s, which was taken", s)
	}

	c := newRegTestConsumer(watch)
	select {
	case b := <-c.ch:
		if !b.Snapshot {
			t.Fatal("first batch is not a snapshot")
		}
		c.apply(t, b)
	case <-time.After(regTestWait):
		t.Fatal("no snapshot")
	}
	if got, want := slices.Sorted(maps.Keys(c.set)), []string{"10.5.1.0-24", "10.5.2.0-24", "10.5.3.0-24"}; !slices.Equal(got, want) {
		t.Errorf("snapshot %v, want the leases listed before the acquisition: %v", got, want)
	}
	c.await(t, regTestWait, func() map[string]string {
		return map[string]string{
			"10.5.1.0-24": val(1), "10.5.2.0-24": val(2), "10.5.3.0-24": val(3), "10.5.9.0-24": val(9),
			own.Key(): val(0),
		}
	})
	if n := pr.count(); n != 1 {
		t.Errorf("%d Ranges of %s, want 1 (the acquisition's, shared with the watch)", n, pr.prefix)
	}
	if n := log.count("WARN", "10.5.4.0-24"); n != 1 {
		t.Errorf("the malformed value was warned about %d times, want once; log:\n%s", n, log)
	}
}
