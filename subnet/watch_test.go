package subnet

import (
	"context"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/netagent/netagent/internal/etcdtest"
	"github.com/netagent/netagent/lease"
)

// regTestConsumer applies the batches of a lease watch to a set, and
// records every change it observed, as "+key@value" and "-key".
type regTestConsumer struct {
	ch      <-chan lease.Batch
	set     map[string]string
	changes []string
	batches int
	rev     int64
}

func newRegTestConsumer(ch <-chan lease.Batch) *regTestConsumer {
	return &regTestConsumer{ch: ch, set: map[string]string{}}
}

func (c *regTestConsumer) apply(t *testing.T, b lease.Batch) {
	t.Helper()
	c.batches++
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
	ctx := regTestCtx(t, 60*time.Second)
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
	case <-time.After(10 * time.Second):
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
	c.await(t, 10*time.Second, store)
	if missing, ok := containsInOrder(c.changes, want); !ok {
		t.Fatalf("live: change %s not observed in order; observed %v", missing, c.changes)
	}

	// Malformed: a new key with a bad value and a bad key are skipped with
	// a warning; a known key turning malformed is removed; others flow.
	regTestPut(t, cli, r0, "10.5.7.0-24", `{"PublicIP":"nope"}`, 0)
	regTestPut(t, cli, r0, "10.5.7.1-24", val(7), 0)
	regTestPut(t, cli, r0, "10.5.3.0-24", `not json`, 0)
	step("10.5.8.0-24", 8)
	c.await(t, 10*time.Second, store)
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
	c.await(t, 20*time.Second, store)
	for _, n := range net {
		if !slices.Contains(c.changes[mark:], n) {
			t.Errorf("compaction: change %s not observed; observed %v", n, c.changes[mark:])
		}
	}
	if log.count("lease watch broke") == 0 {
		t.Error("the watch did not go through a re-list")
	}

	// Server restart: the client reconnects and the watch resumes.
	srv.Restart(t)
	want = want[:0]
	mark = len(c.changes)
	step("10.5.20.0-24", 20)
	step("10.5.20.0-24", 21)
	step("10.5.11.0-24", -1)
	c.await(t, 20*time.Second, store)
	if missing, ok := containsInOrder(c.changes[mark:], want); !ok {
		t.Errorf("restart: change %s not observed in order; observed %v", missing, c.changes[mark:])
	}
}

// TestWatchLeasesCoalesces: changes made while the receiver is busy come
// in few batches, all of them, in order.
func TestWatchLeasesCoalesces(t *testing.T) {
	t.Parallel()
	_, cli, r, _ := regTestEnv(t)
	ctx := regTestCtx(t, 30*time.Second)
	slow := newRegTestConsumer(r.WatchLeases(ctx))
	fast := newRegTestConsumer(r.WatchLeases(ctx))
	for _, c := range []*regTestConsumer{slow, fast} {
		select {
		case b := <-c.ch:
			c.apply(t, b)
		case <-time.After(10 * time.Second):
			t.Fatal("no snapshot")
		}
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
	// Once a fast receiver has seen everything, the slow one's goroutine
	// has received it too (most likely): it arrives in few batches.
	resp, err := cli.Get(ctx, "/")
	if err != nil {
		t.Fatal(err)
	}
	fast.awaitRev(t, 10*time.Second, resp.Header.Revision)
	slow.awaitRev(t, 10*time.Second, resp.Header.Revision)
	if !slices.Equal(slow.changes, want) {
		t.Errorf("slow receiver saw\n%v\nwant\n%v", strings.Join(slow.changes, " "), strings.Join(want, " "))
	}
	t.Logf("slow receiver: %d changes in %d batches", n, slow.batches)
	if slow.batches > 1+n/4 {
		t.Errorf("slow receiver got %d batches for %d changes: not coalesced", slow.batches, n)
	}
}

// TestWatchLeasesClosesWithContext: the channel closes when ctx ends.
func TestWatchLeasesClosesWithContext(t *testing.T) {
	t.Parallel()
	_, _, r, _ := regTestEnv(t)
	ctx, cancel := context.WithCancel(context.Background())
	ch := r.WatchLeases(ctx)
	cancel()
	regTestAwaitClosed(t, ch, 5*time.Second)
}

func TestCompactPending(t *testing.T) {
	w := &leaseWatch{known: map[string]lease.Lease{}}
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
