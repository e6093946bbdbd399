package subnet

import (
	"context"
	"fmt"
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

	"github.com/netagent/netagent/internal/etcdtest"
	"github.com/netagent/netagent/lease"
)

// regTestConsumer applies the batches of a lease watch to a set, and
// records every change it observed, as "+key@value" and "-key".
type regTestConsumer struct {
	ch      <-chan lease.Batch
	set     map[string]string
	changes []string
	rev     int64
}

func newRegTestConsumer(ch <-chan lease.Batch) *regTestConsumer {
	return &regTestConsumer{ch: ch, set: map[string]string{}}
}

func (c *regTestConsumer) apply(t *testing.T, b lease.Batch) {
	t.Helper()
	if b.Revision < c.rev {
		t.Errorf("batch revision %d after %d", b.Revision, c.rev)
	}
	c.rev = b.Revision
	if b.Snapshot {
		clear(c.set)
	}
	for _, ev := range b.Events {
		k := ev.Lease.Key()
		if ev.Type == lease.EventRemoved {
			delete(c.set, k)
			c.changes = append(c.changes, "-"+k)
			continue
		}
		if ev.Type != lease.EventAdded {
			t.Errorf("unknown event type %v", ev.Type)
		}
		v := regTestValue(t, ev.Lease.Attrs)
		c.set[k] = v
		c.changes = append(c.changes, "+"+k+"@"+v)
	}
}

// await consumes batches until the set equals want.
func (c *regTestConsumer) await(t *testing.T, timeout time.Duration, want func() map[string]string) {
	t.Helper()
	deadline := time.After(timeout)
	for {
		w := want()
		if maps.Equal(c.set, w) {
			return
		}
		select {
		case b, ok := <-c.ch:
			if !ok {
				t.Fatal("watch channel closed")
			}
			c.apply(t, b)
		case <-time.After(200 * time.Millisecond):
		case <-deadline:
			t.Fatalf("watched set %v, store %v", slices.Sorted(maps.Keys(c.set)), slices.Sorted(maps.Keys(w)))
		}
	}
}

// awaitRev consumes batches until the receiver is at revision rev.
func (c *regTestConsumer) awaitRev(t *testing.T, timeout time.Duration, rev int64) {
	t.Helper()
	deadline := time.After(timeout)
	for c.rev < rev {
		select {
		case b, ok := <-c.ch:
			if !ok {
				t.Fatal("watch channel closed")
			}
			c.apply(t, b)
		case <-deadline:
			t.Fatalf("at revision %d, want %d", c.rev, rev)
		}
	}
}

// containsInOrder reports whether want is a subsequence of got.
func containsInOrder(got, want []string) (string, bool) {
	i := 0
	for _, g := range got {
		if i < len(want) && g == want[i] {
			i++
		}
	}
	if i < len(want) {
		return want[i], false
	}
	return "", true
}

// TestWatchLeases: a snapshot, then every change in order, across a
// compaction while the watcher is cut off, and across a server restart.
func TestWatchLeases(t *testing.T) {
	t.Parallel()
	srv, cli, r0, log := regTestEnv(t)
	proxy := etcdtest.NewProxy(t, srv.Addr())
	r := NewRegistry(etcdtest.NewClient(t, proxy.Endpoints()), r0.prefix, r0.log)
	ctx := regTestCtx(t, 4*regTestWait)
	val := func(n int) string { return regTestValue(t, regTestOpts(n).Attrs) }
	put := func(rel string, n int) { regTestPut(t, cli, r0, rel, val(n), 0) }
	del := func(rel string) {
		if _, err := cli.Delete(ctx, r0.SubnetsPrefix()+rel); err != nil {
			t.Fatal(err)
		}
	}
	store := func() map[string]string {
		out := map[string]string{}
		for k, kv := range regTestKVs(t, cli, r0) {
			if _, err := lease.ParseLeaseAttrs(kv.Value); err == nil {
				if _, _, err := lease.ParseLeaseKey(k); err == nil {
					out[k] = string(kv.Value)
				}
			}
		}
		return out
	}

	for i := 1; i <= 3; i++ {
		put(fmt.Sprintf("10.5.%d.0-24", i), i)
	}
	c := newRegTestConsumer(r.WatchLeases(ctx))
	select {
	case b := <-c.ch:
		if !b.Snapshot || len(b.Events) != 3 {
			t.Fatalf("first batch: snapshot %v with %d events, want a snapshot of 3", b.Snapshot, len(b.Events))
		}
		c.apply(t, b)
	case <-time.After(regTestWait):
		t.Fatal("no snapshot")
	}

	// Live changes, including several of one key: all seen, in order.
	var want []string
	step := func(rel string, n int) {
		if n < 0 {
			del(rel)
			want = append(want, "-"+rel)
		} else {
			put(rel, n)
			want = append(want, "+"+rel+"@"+val(n))
		}
	}
	step("10.5.4.0-24", 4)
	step("10.5.4.0-24", 44)
	step("10.5.1.0-24", -1)
	step("10.5.4.0-24", -1)
	step("10.5.4.0-24", 5)
	step("10.5.2.0-24&fc00::-64", 6)
	c.await(t, regTestWait, store)
	if missing, ok := containsInOrder(c.changes, want); !ok {
		t.Fatalf("live: change %s not observed in order; observed %v", missing, c.changes)
	}

	// Malformed: a new key with a bad value and a bad key are skipped with
	// a warning; a known key turning malformed is removed; others flow.
	regTestPut(t, cli, r0, "10.5.7.0-24", `{"PublicIP":"nope"}`, 0)
	regTestPut(t, cli, r0, "10.5.7.1-24", val(7), 0)
	regTestPut(t, cli, r0, "10.5.3.0-24", `not json`, 0)
	step("10.5.8.0-24", 8)
	c.await(t, regTestWait, store)
	if missing, ok := containsInOrder(c.changes, []string{"-10.5.3.0-24", "+10.5.8.0-24@" + val(8)}); !ok {
		t.Errorf("malformed: %s not observed; observed %v", missing, c.changes)
	}
	for _, key := range []string{"10.5.7.0-24", "10.5.7.1-24", "10.5.3.0-24"} {
		if log.count("WARN", r0.SubnetsPrefix()+key) == 0 {
			t.Errorf("no warning names %s; log:\n%s", key, log)
		}
	}

	// Compaction: the watcher is cut off while changes are made and the
	// history compacted past them; it re-lists and reports the
	// difference.
	restarts := r.Stats().WatchRestarts
	proxy.Cut()
	var net []string
	for i := 10; i < 15; i++ {
		rel := fmt.Sprintf("10.5.%d.0-24", i)
		put(rel, i)
		net = append(net, "+"+rel+"@"+val(i))
	}
	put("10.5.10.0-24", 110) // changed twice: the last value counts
	net[0] = "+10.5.10.0-24@" + val(110)
	del("10.5.2.0-24")
	net = append(net, "-10.5.2.0-24")
	put("10.5.8.0-24", 88)
	net = append(net, "+10.5.8.0-24@"+val(88))
	resp, err := cli.Get(ctx, "/")
	if err != nil {
		t.Fatal(err)
	}
	srv.Compact(t, resp.Header.Revision)
	proxy.Restore()
	mark := len(c.changes)
	c.await(t, regTestWait, store)
	for _, n := range net {
		if !slices.Contains(c.changes[mark:], n) {
			t.Errorf("compaction: change %s not observed; observed %v", n, c.changes[mark:])
		}
	}
	if r.Stats().WatchRestarts == restarts {
		t.Error("the watch did not go through a re-list")
	}

	// Server restart: the client reconnects and the watch resumes (a
	// re-list, if the watch broke, happens before the first change is
	// seen: the later ones are streamed in order).
	srv.Restart(t)
	want = want[:0]
	mark = len(c.changes)
	step("10.5.20.0-24", 20)
	c.await(t, regTestWait, store)
	step("10.5.20.0-24", 21)
	step("10.5.11.0-24", -1)
	c.await(t, regTestWait, store)
	if missing, ok := containsInOrder(c.changes[mark:], want); !ok {
		t.Errorf("restart: change %s not observed in order; observed %v", missing, c.changes[mark:])
	}
}

// TestWatchLeasesLateReceiver: a receiver that reads only after 60 changes
// were made gets every one of them, in store order.
func TestWatchLeasesLateReceiver(t *testing.T) {
	t.Parallel()
	_, cli, r, _ := regTestEnv(t)
	ctx := regTestCtx(t, 2*regTestWait)
	late := newRegTestConsumer(r.WatchLeases(ctx))
	select {
	case b := <-late.ch:
		late.apply(t, b)
	case <-time.After(regTestWait):
		t.Fatal("no snapshot")
	}
	var want []string
	const n = 60
	for i := range n {
		rel := fmt.Sprintf("10.5.%d.0-24", i%20)
		if i >= 40 {
			if _, err := cli.Delete(ctx, r.SubnetsPrefix()+rel); err != nil {
				t.Fatal(err)
			}
			want = append(want, "-"+rel)
			continue
		}
		v := regTestValue(t, regTestOpts(i).Attrs)
		regTestPut(t, cli, r, rel, v, 0)
		want = append(want, "+"+rel+"@"+v)
	}
	resp, err := cli.Get(ctx, "/")
	if err != nil {
		t.Fatal(err)
	}
	late.awaitRev(t, regTestWait, resp.Header.Revision)
	if !slices.Equal(late.changes, want) {
		t.Errorf("late receiver saw\n%v\nwant\n%v", strings.Join(late.changes, " "), strings.Join(want, " "))
	}
}

// regTestFeed plays a watch for leaseWatch.stream: each send returns once
// stream has taken the response, so when a send returns, every response
// sent before it has been applied.
type regTestFeed struct {
	t   *testing.T
	r   *Registry
	ch  chan clientv3.WatchResponse
	rev int64
}

func (f *regTestFeed) send(wr clientv3.WatchResponse) {
	f.t.Helper()
	select {
	case f.ch <- wr:
	case <-time.After(regTestWait):
		f.t.Fatal("the lease watch does not take watch responses")
	}
}

// event returns the watch event of a put of value at rel (a delete when
// value is ""), at the next revision.
func (f *regTestFeed) event(rel, value string) *clientv3.Event {
	f.rev++
	kv := &mvccpb.KeyValue{Key: []byte(f.r.SubnetsPrefix() + rel), ModRevision: f.rev}
	if value == "" {
		return &clientv3.Event{Type: clientv3.EventTypeDelete, Kv: kv}
	}
	kv.Value, kv.CreateRevision, kv.Lease = []byte(value), f.rev, 1
	return &clientv3.Event{Type: clientv3.EventTypePut, Kv: kv}
}

// changes sends each event in a response of its own.
func (f *regTestFeed) changes(evs ...*clientv3.Event) {
	f.t.Helper()
	for _, ev := range evs {
		f.send(clientv3.WatchResponse{Events: []*clientv3.Event{ev}})
	}
}

// sync returns once everything sent before has been applied.
func (f *regTestFeed) sync() {
	f.t.Helper()
	f.send(clientv3.WatchResponse{})
}

// TestWatchLeasesCoalesces: changes that arrive while the receiver is not
// reading are merged into the one batch it takes next, all of them, in
// order; those that arrive before it took the first Snapshot are folded
// into that Snapshot. The watch is played through a WatchChan of the
// test's own, with the receiver held, so that what is merged does not
// depend on scheduling.
func TestWatchLeasesCoalesces(t *testing.T) {
	log := &regTestLog{}
	r := NewRegistry(nil, "/test/coalesce", slog.New(log))
	f := &regTestFeed{t: t, r: r, ch: make(chan clientv3.WatchResponse)}
	w := newLeaseWatch(r)
	out := make(chan lease.Batch)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	broke := make(chan bool, 1)
	go func() { broke <- w.stream(ctx, f.ch, out) }()

	c := newRegTestConsumer(out)
	take := func() lease.Batch {
		t.Helper()
		select {
		case b := <-out:
			c.apply(t, b)
			return b
		case <-time.After(regTestWait):
			t.Fatal("no batch")
		}
		return lease.Batch{}
	}
	val := func(n int) string { return regTestValue(t, regTestOpts(n).Attrs) }
	put := func(rel string, n int) *clientv3.Event { return f.event(rel, val(n)) }
	del := func(rel string) *clientv3.Event { return f.event(rel, "") }

	// Before the Snapshot is taken: folded into it.
	f.changes(put("10.5.1.0-24", 1), put("10.5.2.0-24", 2), put("10.5.3.0-24", 3), put("10.5.1.0-24", 11), del("10.5.2.0-24"))
	f.sync()
	if b := take(); !b.Snapshot || b.Revision != f.rev || len(b.Events) != 2 {
		t.Fatalf("first batch: snapshot %v of %d events at revision %d; want a snapshot of 2 at %d", b.Snapshot, len(b.Events), b.Revision, f.rev)
	}
	if want := map[string]string{"10.5.1.0-24": val(11), "10.5.3.0-24": val(3)}; !maps.Equal(c.set, want) {
		t.Fatalf("snapshot %v, want %v", c.set, want)
	}

	// Receiver held while 60 changes arrive one by one: one batch of all.
	var want []string
	const n = 60
	for i := range n {
		rel := fmt.Sprintf("10.5.%d.0-24", 100+i%20)
		if i >= 40 {
			f.changes(del(rel))
			want = append(want, "-"+rel)
			continue
		}
		f.changes(put(rel, i))
		want = append(want, "+"+rel+"@"+val(i))
	}
	f.sync()
	mark := len(c.changes)
	if b := take(); b.Snapshot || b.Revision != f.rev {
		t.Errorf("batch after the held receiver: snapshot %v at revision %d, want changes up to %d", b.Snapshot, b.Revision, f.rev)
	}
	if got := c.changes[mark:]; !slices.Equal(got, want) {
		t.Errorf("held receiver got, in one batch,\n%v\nwant\n%v", strings.Join(got, " "), strings.Join(want, " "))
	}

	// A receiver that takes each batch gets the changes since the last.
	for i, events := range []func() []*clientv3.Event{
		func() []*clientv3.Event { return []*clientv3.Event{put("10.5.4.0-24", 4)} },
		func() []*clientv3.Event { return []*clientv3.Event{put("10.5.4.0-24", 44), del("10.5.3.0-24")} },
	} {
		step := events()
		mark := len(c.changes)
		f.send(clientv3.WatchResponse{Events: step}) // several events in one response
		f.sync()
		if b := take(); len(b.Events) != len(step) || b.Revision != f.rev {
			t.Errorf("step %d: batch of %d events at revision %d, want %d at %d", i, len(b.Events), b.Revision, len(step), f.rev)
		}
		if got := len(c.changes) - mark; got != len(step) {
			t.Errorf("step %d: %d changes, want %d", i, got, len(step))
		}
	}

	// A backlog past pendingCompactAt is cut to the last event of each key:
	// the receiver ends in the same state.
	const backlog = pendingCompactAt + 500
	for i := range backlog {
		f.changes(put(fmt.Sprintf("10.5.%d.0-24", 200+i%3), 1000+i))
	}
	f.sync()
	if b := take(); len(b.Events) >= backlog {
		t.Errorf("backlog of %d events delivered as %d: not compacted", backlog, len(b.Events))
	}
	wantSet := map[string]string{"10.5.1.0-24": val(11), "10.5.4.0-24": val(44)}
	for i := backlog - 3; i < backlog; i++ {
		wantSet[fmt.Sprintf("10.5.%d.0-24", 200+i%3)] = val(1000 + i)
	}
	if !maps.Equal(c.set, wantSet) {
		t.Errorf("after the backlog the receiver has %v, want %v", c.set, wantSet)
	}

	// A change not yet taken when the watch breaks stays pending for the
	// watch that follows the re-list.
	f.changes(put("10.5.5.0-24", 5))
	f.send(clientv3.WatchResponse{CompactRevision: f.rev})
	select {
	case again := <-broke:
		if !again {
			t.Fatal("stream ended as if ctx were done when the watch broke")
		}
	case <-time.After(regTestWait):
		t.Fatal("stream did not end when the watch broke")
	}
	if st := r.Stats(); st.WatchRestarts != 1 {
		t.Errorf("WatchRestarts = %d after one broken watch, want 1", st.WatchRestarts)
	}
	if len(w.pending) != 1 || w.pending[0].Lease.Key() != "10.5.5.0-24" {
		t.Errorf("pending after the break: %v, want the change to 10.5.5.0-24", w.pending)
	}
	// The Snapshot taken, the watch keeps revisions only, not leases.
	if w.snapshot || w.first != nil {
		t.Errorf("after the Snapshot was taken the watch still holds it: snapshot %v, %d leases", w.snapshot, len(w.first))
	}
	if got, want := len(w.known), len(wantSet)+1; got != want {
		t.Errorf("watch knows %d keys, want %d", got, want)
	}
}

// TestWatchLeasesClosesWithContext: the channel closes when ctx ends.
func TestWatchLeasesClosesWithContext(t *testing.T) {
	t.Parallel()
	_, _, r, _ := regTestEnv(t)
	ctx, cancel := context.WithCancel(context.Background())
	ch := r.WatchLeases(ctx)
	cancel()
	regTestAwaitClosed(t, ch, regTestWait)
}

func TestCompactPending(t *testing.T) {
	w := &leaseWatch{}
	p := func(i int) lease.Lease {
		return lease.Lease{Subnet: netip.MustParsePrefix(fmt.Sprintf("10.5.%d.0/24", i))}
	}
	var evs []lease.Event
	for round := range 3 {
		for i := range 5 {
			typ := lease.EventAdded
			if round == 1 && i%2 == 0 {
				typ = lease.EventRemoved
			}
			l := p(i)
			l.ModRevision = int64(round*10 + i)
			evs = append(evs, lease.Event{Type: typ, Lease: l})
		}
	}
	evs = append(evs, lease.Event{Type: lease.EventRemoved, Lease: p(3)})
	w.pending = slices.Clone(evs)
	w.compactPending()
	apply := func(evs []lease.Event) map[string]int64 {
		m := map[string]int64{}
		for _, ev := range evs {
			if ev.Type == lease.EventRemoved {
				delete(m, ev.Lease.Key())
			} else {
				m[ev.Lease.Key()] = ev.Lease.ModRevision
			}
		}
		return m
	}
	if len(w.pending) != 5 {
		t.Errorf("%d events after compaction, want 5", len(w.pending))
	}
	if got, want := apply(w.pending), apply(evs); !maps.Equal(got, want) {
		t.Errorf("compacted events give %v, all events %v", got, want)
	}
}

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
