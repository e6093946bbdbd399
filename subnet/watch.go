package subnet

import (
	"context"
	"maps"
	"slices"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/netagent/netagent/internal/backoff"
	"github.com/netagent/netagent/lease"
)

// pendingCompactAt is the backlog (in events) past which the events not yet
// taken by a slow receiver are collapsed to the last one of each key.
const pendingCompactAt = 4096

// WatchLeases watches every lease under <prefix>/subnets/ until ctx is done,
// then closes the channel. The first batch is a Snapshot of all leases;
// each later batch holds the changes since the previous one, in store
// order. It lists at a revision and watches from the next one, so nothing
// is missed between the two; when the watch breaks (compaction, lost
// leader) it lists again and delivers the difference as events. Changes
// that pile up while the receiver is busy are coalesced into one batch.
// Keys and values that do not parse are skipped with a warning (a known
// lease whose value turns malformed is delivered as removed).
func (r *Registry) WatchLeases(ctx context.Context) <-chan lease.Batch {
	return r.watchLeases(ctx, nil)
}

// watchLeases is WatchLeases; with first set, its first Snapshot is that
// list instead of one of its own.
func (r *Registry) watchLeases(ctx context.Context, first *listing) <-chan lease.Batch {
	out := make(chan lease.Batch)
	go newLeaseWatch(r).run(ctx, first, out)
	return out
}

// leaseWatch is the state of one WatchLeases goroutine.
type leaseWatch struct {
	r *Registry
	// known is the receiver's set once it has taken everything pending,
	// by relative key: only the revisions that tell a changed lease from
	// the same one (an event carries the lease from etcd's answer, and a
	// removal needs only the key's subnets), so that 5,000 leases held by
	// the receiver are not held here twice.
	known map[string]revisions
	// snapshot is set until the receiver has taken the first Snapshot;
	// meanwhile first holds its leases, by relative key, and pending is
	// unused.
	snapshot bool
	first    map[string]lease.Lease
	// pending is what the receiver has not taken yet.
	pending []lease.Event
	rev     int64
}

// revisions are a lease key's create and last modification revisions.
type revisions struct{ create, mod int64 }

func revisionsOf(l *lease.Lease) revisions {
	return revisions{create: l.CreateRevision, mod: l.ModRevision}
}

func newLeaseWatch(r *Registry) *leaseWatch {
	return &leaseWatch{r: r, known: map[string]revisions{}, snapshot: true, first: map[string]lease.Lease{}}
}

func (w *leaseWatch) run(ctx context.Context, first *listing, out chan<- lease.Batch) {
	defer close(out)
	if first != nil {
		w.diff(first.entries, first.rev)
	} else if !w.resync(ctx) {
		return
	}
	for {
		wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
		wch := w.r.watch(wctx, w.r.SubnetsPrefix(), clientv3.WithPrefix(), clientv3.WithRev(w.rev+1))
		if !w.stream(ctx, wch, out) {
			cancel()
			return
		}
		cancel()
		if !w.resync(ctx) {
			return
		}
	}
}

// stream applies watch responses and hands pending batches to out until
// the watch breaks (true) or ctx is done (false).
func (w *leaseWatch) stream(ctx context.Context, wch clientv3.WatchChan, out chan<- lease.Batch) bool {
	var cached lease.Batch
	var cachedOK bool
	for {
		var send chan<- lease.Batch
		if w.snapshot || len(w.pending) > 0 {
			if !cachedOK {
				cached, cachedOK = w.batch(), true
			}
			send = out
		}
		select {
		case <-ctx.Done():
			return false
		case send <- cached:
			// The receiver owns the batch now: nothing here keeps it.
			w.pending, w.snapshot, w.first = nil, false, nil
			cached, cachedOK = lease.Batch{}, false
		case wr, ok := <-wch:
			if !ok || wr.Err() != nil {
				if ctx.Err() != nil {
					return false
				}
				var err error
				if ok {
					err = wr.Err()
				}
				w.r.stats.watchRestarts.Add(1)
				w.r.log.Info("lease watch broke: listing again", "prefix", w.r.SubnetsPrefix(), "revision", w.rev, "err", err)
				return true
			}
			for _, ev := range wr.Events {
				w.apply(ev)
			}
			if len(wr.Events) > 0 {
				cachedOK = false
			}
		}
	}
}

// batch builds what the receiver gets next.
func (w *leaseWatch) batch() lease.Batch {
	if !w.snapshot {
		return lease.Batch{Events: w.pending, Revision: w.rev}
	}
	evs := make([]lease.Event, 0, len(w.first))
	for _, k := range slices.Sorted(maps.Keys(w.first)) {
		evs = append(evs, lease.Event{Type: lease.EventAdded, Lease: w.first[k]})
	}
	return lease.Batch{Snapshot: true, Events: evs, Revision: w.rev}
}

// added records l under key k and queues its event for the receiver (or
// folds it into the pending Snapshot).
func (w *leaseWatch) added(k string, l lease.Lease) {
	w.known[k] = revisionsOf(&l)
	if w.snapshot {
		w.first[k] = l
		return
	}
	w.emit(lease.Event{Type: lease.EventAdded, Lease: l})
}

// removed forgets key k, when known, and queues its removal at revision
// rev for the receiver (or drops it from the pending Snapshot).
func (w *leaseWatch) removed(k string, rev int64) {
	if _, ok := w.known[k]; !ok {
		return
	}
	delete(w.known, k)
	if w.snapshot {
		delete(w.first, k)
		return
	}
	// Every known key parsed when it was listed or watched.
	v4, v6, _ := lease.ParseLeaseKey(k)
	w.emit(lease.Event{Type: lease.EventRemoved, Lease: lease.Lease{Subnet: v4, IPv6Subnet: v6, ModRevision: rev}})
}

// emit queues an event for the receiver.
func (w *leaseWatch) emit(ev lease.Event) {
	w.pending = append(w.pending, ev)
	if len(w.pending) > pendingCompactAt && len(w.pending) > 2*len(w.known) {
		w.compactPending()
	}
}

// compactPending keeps only the last pending event of each key, in the
// order of those last events: the receiver ends in the same state.
func (w *leaseWatch) compactPending() {
	last := make(map[string]int, len(w.pending))
	for i, ev := range w.pending {
		last[ev.Lease.Key()] = i
	}
	kept := make([]lease.Event, 0, len(last))
	for i, ev := range w.pending {
		if last[ev.Lease.Key()] == i {
			kept = append(kept, ev)
		}
	}
	w.pending = kept
}

// apply folds one watch event into known and pending.
func (w *leaseWatch) apply(ev *clientv3.Event) {
	w.rev = max(w.rev, ev.Kv.ModRevision)
	rel := strings.TrimPrefix(string(ev.Kv.Key), w.r.SubnetsPrefix())
	if ev.Type == clientv3.EventTypeDelete {
		w.removed(rel, ev.Kv.ModRevision)
		return
	}
	e, ok := w.r.parseKV(ev.Kv)
	if !ok {
		return
	}
	if e.err != nil {
		w.removed(rel, ev.Kv.ModRevision)
		return
	}
	w.added(rel, e.lease)
}

// resync lists the leases (retrying with backoff while etcd cannot be
// reached) and queues the differences from known as events. It returns
// false when ctx is done.
func (w *leaseWatch) resync(ctx context.Context) bool {
	bo := backoff.NewJittered(500*time.Millisecond, 15*time.Second)
	var lastErr string
	for {
		entries, rev, err := w.list(ctx)
		if err == nil {
			w.diff(entries, rev)
			return true
		}
		if ctx.Err() != nil {
			return false
		}
		if err.Error() != lastErr {
			lastErr = err.Error()
			w.r.log.Warn("cannot list leases: retrying", "prefix", w.r.SubnetsPrefix(), "err", err)
		}
		if sleepCtx(ctx, bo.Next()) != nil {
			return false
		}
	}
}

// list is Registry.list bounded by requestTimeout, failing at once
// without a leader.
func (w *leaseWatch) list(ctx context.Context) ([]entry, int64, error) {
	rctx, cancel := context.WithTimeout(clientv3.WithRequireLeader(ctx), requestTimeout)
	defer cancel()
	return w.r.list(rctx, false)
}

// diff replaces known by the listed leases, queueing what changed: leases
// that are new or whose key was rewritten as added, vanished ones as
// removed. While the first Snapshot is pending, it becomes the list.
func (w *leaseWatch) diff(entries []entry, rev int64) {
	listed := make(map[string]int, len(entries))
	for i, e := range entries {
		if e.err == nil {
			listed[e.key] = i
		}
	}
	if w.snapshot {
		clear(w.known)
		w.first = make(map[string]lease.Lease, len(listed))
	}
	for _, k := range slices.Sorted(maps.Keys(w.known)) {
		if _, ok := listed[k]; !ok {
			w.removed(k, rev)
		}
	}
	for _, k := range slices.Sorted(maps.Keys(listed)) {
		l := &entries[listed[k]].lease
		if old, ok := w.known[k]; !ok || old != revisionsOf(l) {
			w.added(k, *l)
		}
	}
	w.rev = max(w.rev, rev)
}
