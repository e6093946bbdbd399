package kubestore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/cache"

	"github.com/netagent/netagent/internal/backoff"
	"github.com/netagent/netagent/lease"
	"github.com/netagent/netagent/subnet"
	"github.com/netagent/netagent/subnet/kubestore/internal/nodeann"
)

// ErrSubnetOutsideNetwork is wrapped by the error of Hold when the Node's
// pod CIDR is not inside the network config's Network: the controller
// manager's --cluster-cidr and net-conf.json disagree.
var ErrSubnetOutsideNetwork = errors.New("kubestore: pod CIDR outside the network")

// Holder keeps this host's lease: the subnets of its Node and the
// annotations that publish it. It patches the annotations back when
// someone removes or changes them, and follows the Node when it is
// deleted and registered again (delivering the new lease on Changes when
// the pod CIDR changed). It runs until the context given to Hold is done
// or Close is called.
type Holder struct {
	s       *Store
	cfg     *lease.Config
	attrs   lease.LeaseAttrs
	reg     cache.ResourceEventHandlerRegistration
	wake    chan struct{}
	cancel  context.CancelFunc
	done    chan struct{}
	changes chan lease.Lease

	// patchedRV is the resourceVersion of the Node after the last patch:
	// a cached Node older than that does not show the patch yet.
	patchedRV int64
	// conditionSet is true once this Holder has found or made the Node's
	// NetworkUnavailable condition false: it does so once, at the first
	// publication, as flanneld does at start, so that it never fights a
	// controller that sets the condition later.
	conditionSet bool

	mu          sync.Mutex
	cur         lease.Lease
	lastRenewal time.Time
}

// Hold waits until this host's Node exists with a pod CIDR of every family
// cfg enables (logging what it waits for), publishes opts.Attrs in its
// annotations (patching only those that differ), and keeps the lease in a
// goroutine. Of opts only Attrs counts: a Node's lease has no TTL, and its
// subnets are the controller manager's choice. It returns an error
// wrapping ErrForbidden when the patch is refused, and one wrapping
// ErrSubnetOutsideNetwork when the pod CIDR does not fit cfg.
func (s *Store) Hold(ctx context.Context, cfg *lease.Config, opts subnet.AcquireOptions) (*Holder, error) {
	if cfg == nil || (!cfg.EnableIPv4 && !cfg.EnableIPv6) {
		return nil, fmt.Errorf("%w: the config enables neither IPv4 nor IPv6", subnet.ErrInvalidOptions)
	}
	h := &Holder{
		s:       s,
		cfg:     cfg,
		attrs:   opts.Attrs,
		wake:    make(chan struct{}, 1),
		done:    make(chan struct{}),
		changes: make(chan lease.Lease, 1),
	}
	reg, err := s.informer.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    h.mark,
		UpdateFunc: func(_, obj any) { h.mark(obj) },
		DeleteFunc: h.mark,
	})
	if err != nil {
		return nil, fmt.Errorf("kubestore: the Store is closed: %w", err)
	}
	h.reg = reg
	l, err := h.acquire(ctx)
	if err != nil {
		_ = s.informer.RemoveEventHandler(reg)
		return nil, err
	}
	h.cur, h.lastRenewal = l, time.Now()
	hctx, cancel := context.WithCancel(ctx)
	h.cancel = cancel
	go h.run(hctx)
	return h, nil
}

// mark wakes the Holder when its Node changes; it never blocks the
// informer.
func (h *Holder) mark(obj any) {
	if d, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = d.Obj
	}
	if n, ok := obj.(*corev1.Node); !ok || n == nil || n.Name != h.s.nodeName {
		return
	}
	h.poke()
}

// poke wakes run (or acquire) to look at the Node again.
func (h *Holder) poke() {
	select {
	case h.wake <- struct{}{}:
	default:
	}
}

// Lease returns the lease held now.
func (h *Holder) Lease() lease.Lease {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.cur
}

// LastRenewal is when the lease was last confirmed in the Node's
// annotations (acquisition, or a patch since).
func (h *Holder) LastRenewal() time.Time {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.lastRenewal
}

// Changes delivers each lease held after the first one (the Node came
// back with another pod CIDR); a receiver that falls behind gets the
// latest. It is closed when the Holder stops.
func (h *Holder) Changes() <-chan lease.Lease { return h.changes }

// Done is closed when the Holder has stopped.
func (h *Holder) Done() <-chan struct{} { return h.done }

// Close stops the Holder and waits for it. The annotations stay: a
// restarted agent finds its lease published.
func (h *Holder) Close() error {
	h.cancel()
	<-h.done
	return nil
}

// acquire waits for the Node and its pod CIDRs and publishes the lease.
func (h *Holder) acquire(ctx context.Context) (lease.Lease, error) {
	if err := h.s.waitSynced(ctx, h.reg.HasSynced); err != nil {
		return lease.Lease{}, err
	}
	bo := backoff.NewJittered(500*time.Millisecond, 30*time.Second)
	var waitingFor string
	for {
		l, why, err := h.publish(ctx)
		switch {
		case err == nil && why == "":
			return l, nil
		case errors.Is(err, ErrForbidden) || errors.Is(err, ErrSubnetOutsideNetwork):
			return lease.Lease{}, err
		case err != nil:
			h.s.stats.patchFailures.Add(1)
			h.s.log.Warn("cannot publish the lease in the Node's annotations: retrying", "node", h.s.nodeName, "err", err)
			select {
			case <-time.After(bo.Next()):
			case <-ctx.Done():
				return lease.Lease{}, ctx.Err()
			}
			continue
		}
		if why != waitingFor {
			waitingFor = why
			h.s.log.Info("waiting for this host's Node", "node", h.s.nodeName, "for", why)
		}
		select {
		case <-h.wake:
		case <-ctx.Done():
			return lease.Lease{}, ctx.Err()
		case <-h.s.done:
			return lease.Lease{}, errors.New("kubestore: the Store is closed")
		}
	}
}

// publish reads the Node from the cache and patches the annotations that
// differ from the lease's. It returns the lease, or why it cannot be
// published yet (no Node, no pod CIDR), or an error.
func (h *Holder) publish(ctx context.Context) (lease.Lease, string, error) {
	n := h.s.node(h.s.nodeName)
	if n == nil {
		return lease.Lease{}, "the Node to be registered", nil
	}
	if rv := nodeann.ResourceVersion(n); rv != 0 && rv < h.patchedRV {
		return lease.Lease{}, "the Node informer to catch up with the last patch", nil
	}
	v4, v6, err := nodeann.PodCIDRs(n)
	if err != nil {
		return lease.Lease{}, "", err
	}
	if h.cfg.EnableIPv4 && !v4.IsValid() {
		return lease.Lease{}, "an IPv4 pod CIDR (spec.podCIDRs) from the controller manager", nil
	}
	if h.cfg.EnableIPv6 && !v6.IsValid() {
		return lease.Lease{}, "an IPv6 pod CIDR (spec.podCIDRs) from the controller manager", nil
	}
	if err := h.fits(v4, v6); err != nil {
		return lease.Lease{}, "", err
	}
	setCond := !h.conditionSet && !h.s.leaveCondition && networkUnavailable(n)
	if d := nodeann.Diff(n, h.s.names.Want(n, h.attrs)); d != nil || setCond {
		if n, err = h.patch(ctx, d, setCond); err != nil {
			return lease.Lease{}, "", err
		}
	}
	h.conditionSet = true
	l, ok, err := h.s.names.Lease(n, h.cfg)
	if err == nil && !ok {
		err = errors.New("the Node does not publish the lease after the patch")
	}
	if err != nil {
		return lease.Lease{}, "", fmt.Errorf("kubestore: %w", err)
	}
	return l, "", nil
}

// fits checks that the pod CIDRs of the enabled families are inside the
// config's networks, as flannel does.
func (h *Holder) fits(v4, v6 netip.Prefix) error {
	in := func(n, p netip.Prefix) bool { return n.IsValid() && n.Bits() <= p.Bits() && n.Contains(p.Addr()) }
	if h.cfg.EnableIPv4 && !in(h.cfg.Network, v4) {
		return fmt.Errorf("%w: node %s: %s is not inside Network %s", ErrSubnetOutsideNetwork, h.s.nodeName, v4, h.cfg.Network)
	}
	if h.cfg.EnableIPv6 && !in(h.cfg.IPv6Network, v6) {
		return fmt.Errorf("%w: node %s: %s is not inside IPv6Network %s", ErrSubnetOutsideNetwork, h.s.nodeName, v6, h.cfg.IPv6Network)
	}
	return nil
}

// patch writes the annotations d on this host's Node, through its status
// (flannel's RBAC grants nodes/status patch, not nodes patch).
//
// Equivalent to: `kubectl patch node NODE --subresource status --type
// merge -p '{"metadata":{"annotations":D}}'`.
func (h *Holder) patch(ctx context.Context, d map[string]string, setCond bool) (*corev1.Node, error) {
	patch := map[string]any{}
	if d != nil {
		patch["metadata"] = map[string]any{"annotations": d}
	}
	if setCond {
		now := metav1.Now()
		patch["status"] = map[string]any{"conditions": []corev1.NodeCondition{{
			Type: corev1.NodeNetworkUnavailable, Status: corev1.ConditionFalse,
			Reason: conditionReason, Message: "netagent is running on this node",
			LastTransitionTime: now, LastHeartbeatTime: now,
		}}}
	}
	// A strategic merge patch: the annotations merge as in a merge patch,
	// and the condition replaces only the condition of its type.
	body, err := json.Marshal(patch)
	if err != nil {
		return nil, err
	}
	rctx, cancel := context.WithTimeout(ctx, requestTimeout)
	defer cancel()
	n, err := h.s.nodes.patchStatus(rctx, h.s.nodeName, types.StrategicMergePatchType, body)
	if err != nil {
		return nil, forbidden(err, access{verb: "patch", resource: "nodes", subresource: "status", name: h.s.nodeName})
	}
	h.s.stats.patches.Add(1)
	h.patchedRV = nodeann.ResourceVersion(n)
	return n, nil
}

// run keeps the lease until ctx is done.
func (h *Holder) run(ctx context.Context) {
	defer close(h.done)
	defer close(h.changes)
	defer func() { _ = h.s.informer.RemoveEventHandler(h.reg) }()
	bo := backoff.NewJittered(500*time.Millisecond, 30*time.Second)
	present := true
	for {
		select {
		case <-ctx.Done():
			return
		case <-h.s.done:
			return
		case <-h.wake:
		}
		if h.s.node(h.s.nodeName) == nil {
			if present {
				present = false
				h.s.stats.losses.Add(1)
				h.s.log.Warn("this host's Node was deleted: waiting for it to be registered again", "node", h.s.nodeName)
			}
			continue
		}
		restoring := present
		patches := h.s.stats.patches.Load()
		l, why, err := h.publish(ctx)
		if err != nil || why != "" {
			if err != nil && ctx.Err() == nil {
				h.s.stats.patchFailures.Add(1)
				h.s.log.Warn("cannot publish the lease in the Node's annotations: retrying", "node", h.s.nodeName, "err", err)
				// Look again after a pause (or when the Node changes
				// first); a poke after the Holder stopped is harmless.
				time.AfterFunc(bo.Next(), h.poke)
			}
			continue
		}
		bo.Reset()
		present = true
		if h.s.stats.patches.Load() != patches && restoring {
			h.s.stats.restores.Add(1)
			h.s.log.Info("the Node's lease annotations were removed or changed: wrote them back", "node", h.s.nodeName)
		}
		h.set(l)
	}
}

// set records l as the lease held, delivering it on Changes when its
// subnets differ from the previous one's.
func (h *Holder) set(l lease.Lease) {
	h.mu.Lock()
	prev := h.cur
	h.cur, h.lastRenewal = l, time.Now()
	h.mu.Unlock()
	if prev.Key() == l.Key() {
		return
	}
	h.s.log.Info("this host's lease changed", "node", h.s.nodeName, "old", prev.Key(), "new", l.Key())
	select { // Drop an undelivered older lease: only the latest counts.
	case <-h.changes:
	default:
	}
	h.changes <- l
}

// conditionReason is the reason of the NetworkUnavailable condition the
// Holder sets false (flanneld's is "FlannelIsUp").
const conditionReason = "NetagentIsUp"

// networkUnavailable reports whether n's NetworkUnavailable condition is
// missing or not false. Some cloud controllers register Nodes with it true
// and the scheduler keeps pods off such Nodes until the network plugin
// clears it.
func networkUnavailable(n *corev1.Node) bool {
	for _, c := range n.Status.Conditions {
		if c.Type == corev1.NodeNetworkUnavailable {
			return c.Status != corev1.ConditionFalse
		}
	}
	return true
}
