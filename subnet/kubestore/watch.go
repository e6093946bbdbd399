package kubestore

import (
	"context"
	"maps"
	"slices"
	"sync"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/tools/cache"

	"github.com/netagent/netagent/lease"
	"github.com/netagent/netagent/subnet/kubestore/internal/nodeann"
)

// WatchLeases delivers the leases the Nodes publish until ctx is done or
// the Store is closed, then closes the channel, as subnet.Registry's does:
// the first batch is a Snapshot of every lease (once the Node informer has
// listed the Nodes), each later batch the changes since the previous one,
// removals before additions. A Node deleted, or whose annotations no longer
// publish a lease, is a lease removed; a Node whose pod CIDR changed is the
// old lease removed and the new one added. Changes that pile up while the
// receiver is busy are coalesced; a Node update that changes nothing a
// lease holds (status heartbeats, an informer relist after the API server
// restarted) delivers nothing. Nodes that publish a malformed lease are
// skipped with a warning (removed if they were known).
func (s *Store) WatchLeases(ctx context.Context) <-chan lease.Batch {
	out := make(chan lease.Batch)
	w := &leaseWatch{s: s, wake: make(chan struct{}, 1), marked: make(map[string]struct{})}
	reg, err := s.informer.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    w.mark,
		UpdateFunc: func(_, obj any) { w.mark(obj) },
		DeleteFunc: w.mark,
	})
	if err != nil {
		// The informer has stopped: the Store is closed.
		close(out)
		return out
	}
	go func() {
		defer close(out)
		defer func() { _ = s.informer.RemoveEventHandler(reg) }()
		w.run(ctx, reg, out)
	}()
	return out
}

// leaseWatch is the state of one WatchLeases goroutine.
type leaseWatch struct {
	s *Store

	// mu guards marked: the names of the Nodes the informer delivered
	// since run last looked.
	mu     sync.Mutex
	marked map[string]struct{}
	wake   chan struct{}

	// cur is every Node's lease as last read from the cache, by Node
	// name; sent what the receiver has; changed the names whose cur may
	// differ from sent.
	cur, sent map[string]lease.Lease
	changed   map[string]struct{}
	rev       int64
	// bad remembers the Nodes warned about, to warn once per reason.
	bad map[string]string
}

// mark records that a Node changed; it never blocks the informer.
func (w *leaseWatch) mark(obj any) {
	if d, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = d.Obj
	}
	n, ok := obj.(*corev1.Node)
	if !ok {
		return
	}
	w.mu.Lock()
	w.marked[n.Name] = struct{}{}
	w.mu.Unlock()
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

func (w *leaseWatch) run(ctx context.Context, reg cache.ResourceEventHandlerRegistration, out chan<- lease.Batch) {
	if w.s.waitSynced(ctx, reg.HasSynced) != nil {
		return
	}
	w.cur, w.changed, w.bad = make(map[string]lease.Lease), make(map[string]struct{}), make(map[string]string)
	w.takeMarks()
	for _, obj := range w.s.informer.GetStore().List() {
		if n, ok := obj.(*corev1.Node); ok {
			w.read(n.Name, n)
		}
	}
	clear(w.changed)
	snapshot := w.snapshot()
	select {
	case out <- snapshot:
	case <-ctx.Done():
		return
	case <-w.s.done:
		return
	}
	w.sent = maps.Clone(w.cur)
	for {
		var send chan<- lease.Batch
		b := w.batch()
		if len(b.Events) > 0 {
			send = out
		}
		select {
		case <-ctx.Done():
			return
		case <-w.s.done:
			return
		case <-w.wake:
			for _, name := range w.takeMarks() {
				w.read(name, w.s.node(name))
			}
		case send <- b:
			w.commit(b)
		}
	}
}

// takeMarks returns the names marked since the last call, sorted.
func (w *leaseWatch) takeMarks() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	names := slices.Sorted(maps.Keys(w.marked))
	clear(w.marked)
	return names
}

// read updates cur from the Node name as the cache holds it (n nil:
// deleted).
func (w *leaseWatch) read(name string, n *corev1.Node) {
	w.changed[name] = struct{}{}
	if n == nil {
		delete(w.cur, name)
		delete(w.bad, name)
		return
	}
	w.rev = max(w.rev, nodeann.ResourceVersion(n))
	l, ok, err := w.s.names.Lease(n, w.s.cfg)
	switch {
	case err != nil:
		if w.bad[name] != err.Error() {
			w.bad[name] = err.Error()
			w.s.log.Warn("skipping a Node's malformed lease", "node", name, "err", err)
		}
		delete(w.cur, name)
	case !ok:
		delete(w.cur, name)
		delete(w.bad, name)
	default:
		w.cur[name] = l
		delete(w.bad, name)
	}
}

// snapshot is the first batch: every current lease.
func (w *leaseWatch) snapshot() lease.Batch {
	b := lease.Batch{Snapshot: true, Revision: w.rev, Events: make([]lease.Event, 0, len(w.cur))}
	for _, name := range slices.Sorted(maps.Keys(w.cur)) {
		b.Events = append(b.Events, lease.Event{Type: lease.EventAdded, Lease: w.cur[name]})
	}
	return b
}

// batch is what the receiver lacks: for each changed Node, its old lease
// removed (gone, or under another key) and its new one added (new or
// different), removals first.
func (w *leaseWatch) batch() lease.Batch {
	b := lease.Batch{Revision: w.rev}
	var added []lease.Event
	for _, name := range slices.Sorted(maps.Keys(w.changed)) {
		old, had := w.sent[name]
		l, has := w.cur[name]
		if had && has && nodeann.SameLease(&old, &l) {
			continue
		}
		if had && (!has || old.Key() != l.Key()) {
			old.ModRevision = w.rev
			b.Events = append(b.Events, lease.Event{Type: lease.EventRemoved, Lease: old})
		}
		if has {
			added = append(added, lease.Event{Type: lease.EventAdded, Lease: l})
		}
	}
	b.Events = append(b.Events, added...)
	if len(b.Events) == 0 {
		clear(w.changed)
	}
	return b
}

// commit records that the receiver took b (built from changed).
func (w *leaseWatch) commit(lease.Batch) {
	for name := range w.changed {
		if l, ok := w.cur[name]; ok {
			w.sent[name] = l
		} else {
			delete(w.sent, name)
		}
	}
	clear(w.changed)
}
