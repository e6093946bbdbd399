package subnet

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/netagent/netagent/internal/backoff"
	"github.com/netagent/netagent/lease"
)

// renewRetryMax caps the wait between renewal attempts while etcd cannot
// be reached; renewRetryMaxOf caps it further for short TTLs.
const renewRetryMax = 15 * time.Second

// renewRetryMaxOf is the longest wait between renewal attempts for a lease
// of the given TTL: a fifth of it, so that when etcd comes back after an
// outage (it then restarts every lease's TTL) the lease is renewed well
// before it runs out, however short the TTL.
func renewRetryMaxOf(ttl time.Duration) time.Duration {
	return max(500*time.Millisecond, min(renewRetryMax, ttl/5))
}

// Holder keeps this host's lease: it renews the etcd lease before it
// expires, watches the key, and re-acquires a lease (the same subnet when
// it can) when the key is deleted, changed by someone else or expires. It
// never gives up while the context given to Hold lives.
type Holder struct {
	r       *Registry
	cfg     *lease.Config
	opts    AcquireOptions
	cancel  context.CancelFunc
	done    chan struct{}
	changes chan lease.Lease

	mu          sync.Mutex
	cur         held
	lastRenewal time.Time
}

// Hold acquires a lease as Acquire does, then keeps it in a goroutine until
// ctx is done or Close is called.
func (r *Registry) Hold(ctx context.Context, cfg *lease.Config, opts AcquireOptions) (*Holder, error) {
	h, _, err := r.hold(ctx, cfg, opts)
	return h, err
}

// HoldAndWatch holds a lease as Hold does and starts WatchLeases (until
// ctx is done) from the list of leases the acquisition decided on: the
// watch's first Snapshot is that list, and it watches from the revision
// after it, so nothing written meanwhile (this host's own lease included)
// is missed. A start then reads every lease once instead of twice (once to
// acquire, once to watch): with N hosts starting together, N × N leases
// fewer sent by etcd.
func (r *Registry) HoldAndWatch(ctx context.Context, cfg *lease.Config, opts AcquireOptions) (*Holder, <-chan lease.Batch, error) {
	h, ls, err := r.hold(ctx, cfg, opts)
	if err != nil {
		return nil, nil, err
	}
	return h, r.watchLeases(ctx, &ls), nil
}

func (r *Registry) hold(ctx context.Context, cfg *lease.Config, opts AcquireOptions) (*Holder, listing, error) {
	opts, err := opts.withDefaults(cfg)
	if err != nil {
		return nil, listing{}, err
	}
	h0, ls, err := r.acquire(ctx, cfg, opts)
	if err != nil {
		return nil, listing{}, err
	}
	hctx, cancel := context.WithCancel(ctx)
	h := &Holder{
		r:           r,
		cfg:         cfg,
		opts:        opts,
		cancel:      cancel,
		done:        make(chan struct{}),
		changes:     make(chan lease.Lease, 1),
		cur:         h0,
		lastRenewal: h0.renewed,
	}
	go h.run(hctx)
	return h, ls, nil
}

// Lease returns the lease held now.
func (h *Holder) Lease() lease.Lease {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.cur.lease
}

// Changes delivers each lease acquired after the first one (after a loss);
// a receiver that falls behind gets the latest. It is closed when the
// Holder stops.
func (h *Holder) Changes() <-chan lease.Lease { return h.changes }

// LastRenewal is when the lease's TTL last restarted (acquisition or
// renewal).
func (h *Holder) LastRenewal() time.Time {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.lastRenewal
}

// Done is closed when the Holder has stopped.
func (h *Holder) Done() <-chan struct{} { return h.done }

// Close stops renewing and waits for the Holder's goroutine. It does not
// delete the key: a restarted agent gets the same subnet back by its
// PublicIP while the lease lives.
func (h *Holder) Close() error {
	h.cancel()
	<-h.done
	return nil
}

func (h *Holder) snapshot() held {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.cur
}

func (h *Holder) run(ctx context.Context) {
	defer close(h.done)
	defer close(h.changes)
	// Losses in quick succession (say two hosts configured with one
	// PublicIP, taking the lease from each other) are spaced out.
	bo := backoff.NewJittered(time.Second, 30*time.Second)
	var lastLoss time.Time
	for {
		cur := h.snapshot()
		reason, by := h.keep(ctx, cur)
		if ctx.Err() != nil {
			return
		}
		key := h.r.leaseKey(&cur.lease)
		h.r.stats.leaseLosses.Add(1)
		h.logLoss(key, reason, by)
		if !lastLoss.IsZero() && time.Since(lastLoss) < time.Minute {
			if sleepCtx(ctx, bo.Next()) != nil {
				return
			}
		} else {
			bo.Reset()
		}
		lastLoss = time.Now()
		opts := h.opts
		opts.Previous, opts.PreviousV6 = cur.lease.Subnet, cur.lease.IPv6Subnet
		next, _, err := h.r.acquire(ctx, h.cfg, opts)
		if err != nil {
			return // ctx is done
		}
		h.mu.Lock()
		h.cur, h.lastRenewal = next, next.renewed
		h.mu.Unlock()
		select { // Drop an undelivered older lease: only the latest counts.
		case <-h.changes:
		default:
		}
		h.changes <- next.lease
	}
}

// logLoss warns that the lease at key was lost for reason; by is the key
// as someone else rewrote it (nil when deleted or expired). A rewrite
// under an etcd lease naming this host's own public IP is another agent
// configured with that address: the two take the lease from each other
// until one is fixed, so the warning says where to look.
func (h *Holder) logLoss(key, reason string, by *mvccpb.KeyValue) {
	args := []any{"key", key, "reason", reason}
	if by == nil {
		h.r.log.Warn("lost subnet lease: re-acquiring", args...)
		return
	}
	a, err := lease.ParseLeaseAttrs(by.Value)
	if err != nil {
		h.r.log.Warn("lost subnet lease: re-acquiring", append(args, "new_value_err", err)...)
		return
	}
	args = append(args, "new_public_ip", a.PublicIP, "new_public_ipv6", a.PublicIPv6)
	own := h.opts.Attrs
	sameIP := (own.PublicIP.IsValid() && a.PublicIP == own.PublicIP) || (own.PublicIPv6.IsValid() && a.PublicIPv6 == own.PublicIPv6)
	if by.Lease != 0 && sameIP {
		h.r.log.Warn("lost subnet lease to another agent with this host's public IP: a second agent for this --etcd-prefix on this host, or another host with the same --public-ip/--iface; re-acquiring", args...)
		return
	}
	h.r.log.Warn("lost subnet lease: re-acquiring", args...)
}

// keep renews and watches cur until it is lost (returning why, and the
// key as rewritten by someone else when it was) or ctx is done. A key
// deleted or overwritten while the etcd lease lives is written back
// (restorable, restore) instead of being lost. Renewal, the watch and the
// re-reads of the key after a change or a broken watch share one loop, so
// that none of them waits on another's retries.
func (h *Holder) keep(ctx context.Context, cur held) (string, *mvccpb.KeyValue) {
	key := h.r.leaseKey(&cur.lease)
	attempt := min(requestTimeout, max(time.Second, h.opts.RenewMargin/4))
	var stopWatch context.CancelFunc = func() {}
	watch := func(fromRev int64) clientv3.WatchChan {
		stopWatch()
		var wctx context.Context
		wctx, stopWatch = context.WithCancel(clientv3.WithRequireLeader(ctx))
		return h.r.watch(wctx, key, clientv3.WithRev(fromRev))
	}
	wch := watch(cur.lease.ModRevision + 1)
	defer func() { stopWatch() }()

	renew := time.NewTimer(time.Until(cur.renewed.Add(cur.ttl - h.opts.RenewMargin)))
	defer renew.Stop()
	var renewC <-chan time.Time
	if cur.id != 0 { // A reservation is never renewed.
		renewC = renew.C
	}
	check := time.NewTimer(0)
	check.Stop()
	defer check.Stop()
	renewBackoff := backoff.NewJittered(min(500*time.Millisecond, renewRetryMaxOf(cur.ttl)), renewRetryMaxOf(cur.ttl))
	checkBackoff := backoff.NewJittered(500*time.Millisecond, renewRetryMax)
	var failingSince, lastWarn time.Time

	for {
		select {
		case <-ctx.Done():
			return "", nil
		case wr, ok := <-wch:
			if ok && wr.Err() == nil {
				changed := false
				for _, ev := range wr.Events {
					changed = changed || lostReason(ev.Type == clientv3.EventTypeDelete, ev.Kv, &cur) != ""
				}
				if !changed {
					continue
				}
			}
			// The watch broke (compaction, lost leader, closed stream), or
			// the key changed: read the key and decide on what is there
			// now, then watch again from the revision read.
			stopWatch()
			wch = nil
			check.Reset(0)
		case <-check.C:
			rctx, cancel := context.WithTimeout(ctx, attempt)
			resp, err := h.r.cli.Get(rctx, key)
			cancel()
			if err != nil {
				h.r.log.Debug("cannot read own lease: retrying", "key", key, "err", err)
				check.Reset(checkBackoff.Next())
				continue
			}
			checkBackoff.Reset()
			var kv *mvccpb.KeyValue
			if len(resp.Kvs) > 0 {
				kv = resp.Kvs[0]
			}
			reason := lostReason(kv == nil, kv, &cur)
			if reason != "" && kv != nil && cur.id != 0 && clientv3.LeaseID(kv.Lease) == cur.id && bytes.Equal(kv.Value, cur.value) {
				// This host's own write (a restore whose answer was lost).
				cur.lease.CreateRevision, cur.lease.ModRevision = kv.CreateRevision, kv.ModRevision
				h.setCur(cur)
				reason = ""
			}
			if reason == "" {
				wch = watch(resp.Header.GetRevision() + 1)
				continue
			}
			if !h.restorable(kv, &cur) {
				if kv == nil {
					return reason, nil
				}
				return reason, kv
			}
			rev, ok, err := h.restore(ctx, key, kv, &cur)
			switch {
			case errors.Is(err, rpctypes.ErrLeaseNotFound):
				if kv == nil {
					return reason + "; etcd lease expired", nil
				}
				return reason + "; etcd lease expired", kv
			case err != nil:
				if ctx.Err() != nil {
					return "", nil
				}
				h.r.log.Debug("cannot restore own lease: retrying", "key", key, "err", err)
				check.Reset(checkBackoff.Next())
			case !ok:
				// Written again since it was read: read it again. Spaced
				// out, in case someone rewrites it in a loop.
				check.Reset(checkBackoff.Next())
			default:
				h.r.stats.leaseRestores.Add(1)
				h.logRestore(key, reason, kv)
				h.setCur(cur)
				wch = watch(rev + 1)
			}
		case <-renewC:
			rctx, cancel := context.WithTimeout(ctx, attempt)
			resp, err := h.r.cli.KeepAliveOnce(rctx, cur.id)
			cancel()
			switch {
			case errors.Is(err, rpctypes.ErrLeaseNotFound):
				h.r.stats.renewalFailures.Add(1)
				return "etcd lease expired", nil
			case err != nil:
				if ctx.Err() != nil {
					return "", nil
				}
				h.r.stats.renewalFailures.Add(1)
				now := time.Now()
				if failingSince.IsZero() {
					failingSince = now
				}
				if now.Sub(lastWarn) >= time.Minute {
					lastWarn = now
					h.r.log.Warn("cannot renew subnet lease: retrying", "key", key, "failing_for", now.Sub(failingSince).Round(time.Second),
						"expires", cur.renewed.Add(cur.ttl).Format(time.RFC3339), "err", err)
				}
				renew.Reset(renewBackoff.Next())
			default:
				h.r.stats.renewals.Add(1)
				now := time.Now()
				renewBackoff.Reset()
				if !failingSince.IsZero() {
					h.r.log.Info("renewed subnet lease again", "key", key, "failed_for", now.Sub(failingSince).Round(time.Second))
				}
				failingSince, lastWarn = time.Time{}, time.Time{}
				cur.renewed, cur.ttl = now, time.Duration(resp.TTL)*time.Second
				cur.lease.Expiration = now.Add(cur.ttl)
				h.mu.Lock()
				h.cur, h.lastRenewal = cur, now
				h.mu.Unlock()
				h.r.log.Debug("renewed subnet lease", "key", key, "ttl", cur.ttl)
				renew.Reset(max(cur.ttl-h.opts.RenewMargin, time.Second))
			}
		}
	}
}

// lostReason says why a watched or read state of the key (deleted, or kv)
// means cur is no longer held, or "" when it still is.
func lostReason(deleted bool, kv *mvccpb.KeyValue, cur *held) string {
	switch {
	case deleted:
		return "key deleted or its etcd lease expired"
	case kv.CreateRevision != cur.lease.CreateRevision || clientv3.LeaseID(kv.Lease) != cur.id || !bytes.Equal(kv.Value, cur.value):
		return "key rewritten by someone else"
	}
	return ""
}

func (h *Holder) setCur(cur held) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.cur = cur
}

// restorable reports whether this host writes its lease back over what
// it found at its key: nothing (kv nil: deleted) or kv, which lostReason
// said is not cur. The own lease is the agent's while its etcd lease
// lives (docs/compatibility.md §3.6), except for two writes that are
// someone's decision:
//   - a valid value with no etcd lease: a reservation an administrator
//     put (§3.4), for this host or to move the subnet to another one;
//     re-acquiring takes it or moves;
//   - a valid value under another etcd lease naming this host's public
//     IP: another agent configured with this address took the key (§3.5,
//     step 1). Writing it back would make the two take turns as fast as
//     etcd answers; losing it keeps run's spacing and warning.
//
// A reservation held (cur.id 0) is the administrator's too: never
// written back.
func (h *Holder) restorable(kv *mvccpb.KeyValue, cur *held) bool {
	if cur.id == 0 {
		return false
	}
	if kv == nil {
		return true
	}
	a, err := lease.ParseLeaseAttrs(kv.Value)
	switch {
	case err != nil:
		return true
	case kv.Lease == 0:
		return false
	case clientv3.LeaseID(kv.Lease) == cur.id:
		return true
	}
	return !h.ownPublicIP(a)
}

// ownPublicIP reports whether a names this host's public IP (or IPv6
// address).
func (h *Holder) ownPublicIP(a lease.LeaseAttrs) bool {
	own := h.opts.Attrs
	return (own.PublicIP.IsValid() && a.PublicIP == own.PublicIP) || (own.PublicIPv6.IsValid() && a.PublicIPv6 == own.PublicIPv6)
}

// restore writes cur's value back at key under cur's etcd lease: the same
// key, value and etcd lease, so peers see the lease they knew. It is
// guarded by what was read: kv's ModRevision, or, for a deleted key, that
// no key holds one of cur's subnets (as a new lease is, §3.5), so a newer
// write is never overwritten blindly. It returns the revision written,
// and false when the guard failed; the error wraps
// rpctypes.ErrLeaseNotFound when the etcd lease is gone.
func (h *Holder) restore(ctx context.Context, key string, kv *mvccpb.KeyValue, cur *held) (int64, bool, error) {
	var cmps []clientv3.Cmp
	if kv == nil {
		cmps = h.r.freeCmps(key, cur.lease.Subnet, cur.lease.IPv6Subnet)
	} else {
		cmps = []clientv3.Cmp{clientv3.Compare(clientv3.ModRevision(key), "=", kv.ModRevision)}
	}
	tctx, cancel := context.WithTimeout(ctx, requestTimeout)
	defer cancel()
	resp, err := h.r.cli.Txn(tctx).
		If(cmps...).
		Then(clientv3.OpPut(key, string(cur.value), clientv3.WithLease(cur.id))).
		Commit()
	if err != nil {
		return 0, false, fmt.Errorf("subnet: restore lease %s: %w", key, err)
	}
	if !resp.Succeeded {
		return 0, false, nil
	}
	rev := resp.Header.GetRevision()
	cur.lease.ModRevision = rev
	if kv == nil {
		cur.lease.CreateRevision = rev
	}
	return rev, true, nil
}

// logRestore warns that the lease at key was found deleted or overwritten
// (kv) and written back.
func (h *Holder) logRestore(key, reason string, kv *mvccpb.KeyValue) {
	args := []any{"key", key, "reason", reason}
	if kv != nil {
		v := kv.Value
		if len(v) > 96 {
			v = v[:96]
		}
		args = append(args, "found_value", fmt.Sprintf("%q", v), "found_etcd_lease", fmt.Sprintf("%x", kv.Lease))
		if _, err := lease.ParseLeaseAttrs(kv.Value); err != nil {
			args = append(args, "found_err", err)
		}
	}
	h.r.log.Warn("own subnet lease deleted or overwritten while its etcd lease lives: restored", args...)
}
