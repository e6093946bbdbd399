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
	w := &leaseWatch{r: r, known: make(map[string]lease.Lease)}
	go w.run(ctx, first, out)
	return out
}

// leaseWatch is the state of one WatchLeases goroutine.
type leaseWatch struct {
	r *Registry
	// known is the receiver's set once it has taken everything pending,
	// by relative key.
	known map[string]lease.Lease
	// pending is what the receiver has not taken yet; while snapshot is
	// set it is the first Snapshot, built from known when sent.
	pending  []lease.Event
	snapshot bool
	rev      int64
}

func (w *leaseWatch) run(ctx context.Context, first *listing, out chan<- lease.Batch) {
	defer close(out)
	w.snapshot = true
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
			w.pending, w.snapshot, cachedOK = nil, false, false
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
	evs := make([]lease.Event, 0, len(w.known))
	for _, k := range slices.Sorted(maps.Keys(w.known)) {
		evs = append(evs, lease.Event{Type: lease.EventAdded, Lease: w.known[k]})
	}
	return lease.Batch{Snapshot: true, Events: evs, Revision: w.rev}
}

// emit queues an event for the receiver (unless a Snapshot is pending,
// which is rebuilt from known).
func (w *leaseWatch) emit(ev lease.Event) {
	if w.snapshot {
		return
	}
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
		if l, ok := w.known[rel]; ok {
			delete(w.known, rel)
			l.ModRevision = ev.Kv.ModRevision
			w.emit(lease.Event{Type: lease.EventRemoved, Lease: l})
		}
		return
	}
	e, ok := w.r.parseKV(ev.Kv)
	if !ok {
		return
	}
	if e.err != nil {
		if l, known := w.known[rel]; known {
			delete(w.known, rel)
			l.ModRevision = ev.Kv.ModRevision
			w.emit(lease.Event{Type: lease.EventRemoved, Lease: l})
		}
		return
	}
	w.known[rel] = e.lease
	w.emit(lease.Event{Type: lease.EventAdded, Lease: e.lease})
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
	return w.r.list(rctx)
}

// diff replaces known by the listed leases, queueing what changed: leases
// that are new or whose key was rewritten as added, vanished ones as
// removed.
func (w *leaseWatch) diff(entries []entry, rev int64) {
	listed := make(map[string]lease.Lease, len(entries))
	for _, e := range entries {
		if e.err == nil {
			listed[e.key] = e.lease
		}
	}
	for _, k := range slices.Sorted(maps.Keys(w.known)) {
		if _, ok := listed[k]; !ok {
			l := w.known[k]
			l.ModRevision = rev
			w.emit(lease.Event{Type: lease.EventRemoved, Lease: l})
		}
	}
	for _, k := range slices.Sorted(maps.Keys(listed)) {
		l := listed[k]
		if old, ok := w.known[k]; !ok || old.ModRevision != l.ModRevision || old.CreateRevision != l.CreateRevision {
			w.emit(lease.Event{Type: lease.EventAdded, Lease: l})
		}
	}
	w.known = listed
	w.rev = max(w.rev, rev)
}
