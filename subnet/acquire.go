package subnet

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"strings"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/netagent/netagent/internal/backoff"
	"github.com/netagent/netagent/lease"
)

// ErrPoolExhausted is wrapped by the error of an acquisition that found no
// free subnet; the error names the pool.
var ErrPoolExhausted = errors.New("subnet: pool exhausted")

// ErrLeaseConflict is wrapped by the error of an acquisition whose
// transaction lost a race with another host (Acquire retries it).
var ErrLeaseConflict = errors.New("subnet: lease changed concurrently")

// ErrInvalidOptions is wrapped by the error of an acquisition whose
// AcquireOptions or Config cannot work; retrying does not help.
var ErrInvalidOptions = errors.New("subnet: invalid acquire options")

// Defaults of AcquireOptions.
const (
	DefaultLeaseTTL    = 24 * time.Hour
	DefaultRenewMargin = time.Hour
)

// conflictRetries is how many times TryAcquire re-lists after losing a race
// before it reports ErrLeaseConflict.
const conflictRetries = 3

// AcquireOptions describe the lease this host asks for.
type AcquireOptions struct {
	// Attrs is the value to store: PublicIP (PublicIPv6 on an IPv6-only
	// network) identifies this host's own lease.
	Attrs lease.LeaseAttrs
	// TTL is the etcd lease's time to live (DefaultLeaseTTL when zero,
	// whole seconds, at least 1 s).
	TTL time.Duration
	// RenewMargin is how long before expiry a Holder renews
	// (DefaultRenewMargin when zero); it must be shorter than TTL.
	RenewMargin time.Duration
	// Previous and PreviousV6 are the subnets of the previous subnet file,
	// if any: preferred when this host has no lease and they are free.
	Previous, PreviousV6 netip.Prefix
}

// withDefaults checks o against cfg and fills in the defaults.
func (o AcquireOptions) withDefaults(cfg *lease.Config) (AcquireOptions, error) {
	if cfg == nil || (!cfg.EnableIPv4 && !cfg.EnableIPv6) {
		return o, fmt.Errorf("%w: the config enables neither IPv4 nor IPv6", ErrInvalidOptions)
	}
	if o.TTL == 0 {
		o.TTL = DefaultLeaseTTL
	}
	if o.RenewMargin == 0 {
		o.RenewMargin = DefaultRenewMargin
	}
	switch {
	case o.TTL < time.Second:
		return o, fmt.Errorf("%w: TTL %v is shorter than 1s", ErrInvalidOptions, o.TTL)
	case o.RenewMargin < 0 || o.RenewMargin >= o.TTL:
		return o, fmt.Errorf("%w: RenewMargin %v must be positive and shorter than TTL %v", ErrInvalidOptions, o.RenewMargin, o.TTL)
	case cfg.EnableIPv4 && !o.Attrs.PublicIP.Is4():
		return o, fmt.Errorf("%w: IPv4 is enabled but Attrs.PublicIP is not an IPv4 address", ErrInvalidOptions)
	case !cfg.EnableIPv4 && !o.Attrs.PublicIPv6.Is6():
		return o, fmt.Errorf("%w: IPv6-only network but Attrs.PublicIPv6 is not an IPv6 address", ErrInvalidOptions)
	case cfg.EnableIPv4 && (!cfg.SubnetMin.IsValid() || !cfg.SubnetMax.IsValid() || cfg.SubnetMin.Bits() != cfg.SubnetLen || cfg.SubnetMax.Bits() != cfg.SubnetLen):
		return o, fmt.Errorf("%w: the config's IPv4 SubnetMin/SubnetMax/SubnetLen are inconsistent", ErrInvalidOptions)
	case cfg.EnableIPv6 && (!cfg.IPv6SubnetMin.IsValid() || !cfg.IPv6SubnetMax.IsValid() || cfg.IPv6SubnetMin.Bits() != cfg.IPv6SubnetLen || cfg.IPv6SubnetMax.Bits() != cfg.IPv6SubnetLen):
		return o, fmt.Errorf("%w: the config's IPv6 SubnetMin/SubnetMax/SubnetLen are inconsistent", ErrInvalidOptions)
	}
	return o, nil
}

func v4Pool(cfg *lease.Config) pool { return pool{cfg.SubnetMin, cfg.SubnetMax, cfg.SubnetLen} }
func v6Pool(cfg *lease.Config) pool {
	return pool{cfg.IPv6SubnetMin, cfg.IPv6SubnetMax, cfg.IPv6SubnetLen}
}

// held is a lease this host holds, with its etcd lease (0 for a
// reservation), the time its TTL was last restarted and the value stored.
type held struct {
	lease   lease.Lease
	id      clientv3.LeaseID
	ttl     time.Duration
	renewed time.Time
	value   []byte
}

// TryAcquire makes one acquisition (docs/compatibility.md §3.5): this host's own lease,
// found by its PublicIP (PublicIPv6 when IPv6-only), when it fits cfg;
// else the previous subnet(s) if free and fitting; else a free subnet drawn
// at random. It returns an error wrapping ErrPoolExhausted when none is
// free. It re-lists up to a few times when it loses a race with another
// host, then returns ErrLeaseConflict.
//
// Its cost in etcd requests does not depend on the number of leases: one
// Range, one Grant and one Txn (plus one keys-only Range for a new lease
// with an IPv6 subnet, and a Revoke when the Txn's guard fails).
func (r *Registry) TryAcquire(ctx context.Context, cfg *lease.Config, opts AcquireOptions) (lease.Lease, error) {
	opts, err := opts.withDefaults(cfg)
	if err != nil {
		return lease.Lease{}, err
	}
	h, _, err := r.tryAcquire(ctx, cfg, opts)
	return h.lease, err
}

// Acquire calls TryAcquire until it succeeds or ctx is done, waiting with
// capped exponential backoff and jitter between attempts. Exhaustion and
// store errors are logged once per attempt.
func (r *Registry) Acquire(ctx context.Context, cfg *lease.Config, opts AcquireOptions) (lease.Lease, error) {
	opts, err := opts.withDefaults(cfg)
	if err != nil {
		return lease.Lease{}, err
	}
	h, _, err := r.acquire(ctx, cfg, opts)
	return h.lease, err
}

// listing is one Range of every key under <prefix>/subnets/ and the store
// revision it was read at: what an acquisition decided on.
type listing struct {
	entries []entry
	rev     int64
}

// acquire is Acquire's loop; it also returns the list the successful
// attempt decided on.
func (r *Registry) acquire(ctx context.Context, cfg *lease.Config, opts AcquireOptions) (held, listing, error) {
	bo := backoff.NewJittered(time.Second, 30*time.Second)
	for {
		h, ls, err := r.tryAcquire(ctx, cfg, opts)
		switch {
		case err == nil:
			return h, ls, nil
		case ctx.Err() != nil:
			return held{}, listing{}, ctx.Err()
		case errors.Is(err, ErrInvalidOptions):
			return held{}, listing{}, err
		}
		wait := bo.Next()
		if errors.Is(err, ErrLeaseConflict) {
			wait = rand.N(200 * time.Millisecond)
		} else {
			r.log.Warn("cannot acquire a subnet lease: retrying", "err", err, "retry_in", wait.Round(time.Millisecond))
		}
		if err := sleepCtx(ctx, wait); err != nil {
			return held{}, listing{}, err
		}
	}
}

// tryAcquire is one acquisition: a list, then a decision on it and a write
// (attempt), listed and decided again after a conflict.
//
// The first list is serializable: any member answers it from what it has
// applied, without asking the leader for a ReadIndex (with N hosts
// starting at once, N fewer round trips through the leader). It can be
// behind, and nothing decided on it is taken without a write whose
// compares fail on a stale list: a new key's Txn requires the key and its
// subnets' other key forms to be absent (the subnet file's subnet, which
// a restarted agent prefers, is this host's own key when a stale list
// misses it), the own key's Txn requires the ModRevision listed, and a
// reservation whose value must change requires its ModRevision. A failed
// compare is a conflict, and the lists after a conflict are linearizable.
// What a stale list can still cost: a reservation taken without a write
// that has changed since (as with a linearizable list whose key changes
// right after it is read: the Holder's watch of the key sees it); and
// this host's own key, written by a run that stopped before writing the
// subnet file, missed when the member has not applied it yet, and a
// second subnet taken beside it, freed when that key's etcd lease expires.
//
// Writes of earlier attempts whose answer was lost are settled here (see
// settle): this host's key found on the etcd lease of one of them is taken
// as it is, with no Grant or Txn.
func (r *Registry) tryAcquire(ctx context.Context, cfg *lease.Config, opts AcquireOptions) (held, listing, error) {
	var err error
	for i := range conflictRetries {
		entries, rev, lerr := r.list(ctx, i == 0)
		if lerr != nil {
			return held{}, listing{}, lerr
		}
		if h, replaced, ok := r.takeLost(ctx, cfg, opts, entries); ok {
			r.revoke(ctx, replaced)
			r.settleAll(ctx, h.id)
			return h, listing{entries, rev}, nil
		}
		if err := r.settle(ctx, 0, true); err != nil { // new keys' only
			return held{}, listing{}, err
		}
		var h held
		h, err = r.attempt(ctx, cfg, opts, entries, rev)
		if err == nil {
			r.settleAll(ctx, h.id)
		}
		if !errors.Is(err, ErrLeaseConflict) {
			return h, listing{entries, rev}, err
		}
	}
	return held{}, listing{}, err
}

// attempt is one decide-write round on the leases listed at rev.
func (r *Registry) attempt(ctx context.Context, cfg *lease.Config, opts AcquireOptions, entries []entry, rev int64) (held, error) {
	value, err := opts.Attrs.MarshalJSON()
	if err != nil {
		return held{}, fmt.Errorf("subnet: encode lease value: %w", err)
	}
	if own := r.findOwn(cfg, opts, entries); own != nil {
		if own.lease.Reservation {
			return r.takeReservation(ctx, own, opts, value)
		}
		return r.renewOwn(ctx, own, opts, value)
	}
	taken := newTakenSet(cfg, entries)
	var v4, v6 netip.Prefix
	if cfg.EnableIPv4 {
		if v4, err = v4Pool(cfg).pick(taken, opts.Previous); err != nil {
			return held{}, err
		}
	}
	if cfg.EnableIPv6 {
		if v6, err = v6Pool(cfg).pick(taken, opts.PreviousV6); err != nil {
			return held{}, err
		}
	}
	return r.create(ctx, v4, v6, rev, opts, value)
}

// findOwn returns this host's lease that fits cfg, preferring a
// reservation, then the newest; nil when there is none.
func (r *Registry) findOwn(cfg *lease.Config, opts AcquireOptions, entries []entry) *entry {
	var own *entry
	for i := range entries {
		e := &entries[i]
		if e.err != nil {
			continue
		}
		mine := e.lease.Attrs.PublicIP == opts.Attrs.PublicIP
		if !cfg.EnableIPv4 {
			mine = e.lease.Attrs.PublicIPv6 == opts.Attrs.PublicIPv6
		}
		if !mine {
			continue
		}
		if !cfg.Fits(e.lease.Subnet, e.lease.IPv6Subnet) {
			r.log.Info("not reusing this host's lease: it does not fit the network config", "key", r.SubnetsPrefix()+e.lease.Key())
			continue
		}
		switch {
		case own == nil,
			e.lease.Reservation && !own.lease.Reservation,
			e.lease.Reservation == own.lease.Reservation && e.lease.CreateRevision > own.lease.CreateRevision:
			own = e
		}
	}
	return own
}

// takeReservation takes a reservation as it is; only a different value is
// written, still without an etcd lease, guarded by its ModRevision.
func (r *Registry) takeReservation(ctx context.Context, own *entry, opts AcquireOptions, value []byte) (held, error) {
	l := own.lease
	key := r.leaseKey(&l)
	if old, err := l.Attrs.MarshalJSON(); err == nil && bytes.Equal(old, value) {
		r.log.Info("took reserved subnet", "key", key)
		return held{lease: l, value: own.value, renewed: time.Now()}, nil
	}
	resp, err := r.cli.Txn(ctx).
		If(clientv3.Compare(clientv3.ModRevision(key), "=", l.ModRevision)).
		Then(clientv3.OpPut(key, string(value))).
		Commit()
	if err != nil {
		return held{}, fmt.Errorf("subnet: update reservation %s: %w", key, err)
	}
	if !resp.Succeeded {
		return held{}, fmt.Errorf("%w: reservation %s was modified", ErrLeaseConflict, key)
	}
	l.Attrs = opts.Attrs
	l.ModRevision = resp.Header.GetRevision()
	r.log.Info("took reserved subnet", "key", key)
	return held{lease: l, value: value, renewed: time.Now()}, nil
}

// renewOwn reuses this host's existing lease with a fresh etcd lease, so
// that its TTL restarts, guarded by the key's ModRevision as listed: of
// this host's writes to the key, only one decided on the same state can
// be applied, so that once one is known to be applied (or the key to have
// changed), the etcd leases of the others can be revoked without deleting
// the key. The etcd lease the key was on, which then holds nothing, is
// revoked too.
func (r *Registry) renewOwn(ctx context.Context, own *entry, opts AcquireOptions, value []byte) (held, error) {
	l := own.lease
	key := r.leaseKey(&l)
	h, err := r.grantAndPut(ctx, key, clientv3.Compare(clientv3.ModRevision(key), "=", l.ModRevision), opts, value)
	r.rememberLost(err, lostWrite{replaces: own.etcdLease})
	if err != nil {
		return held{}, err
	}
	h.lease.Subnet, h.lease.IPv6Subnet = l.Subnet, l.IPv6Subnet
	h.lease.CreateRevision = l.CreateRevision
	if own.etcdLease != h.id {
		r.revoke(ctx, own.etcdLease)
	}
	r.log.Info("reusing this host's subnet lease", "key", key)
	return h, nil
}

// create writes a new lease for v4/v6, none of whose subnets may exist
// under any key form: the exact key and the other forms holding the IPv4
// subnet are guarded in the Txn; a key holding the IPv6 subnet in another
// form (which no compare can express) is looked for right after.
func (r *Registry) create(ctx context.Context, v4, v6 netip.Prefix, listRev int64, opts AcquireOptions, value []byte) (held, error) {
	key := r.SubnetsPrefix() + lease.LeaseKey(v4, v6)
	cmps := r.freeCmps(key, v4, v6)
	h, err := r.grantAndPut(ctx, key, clientv3.Compare(clientv3.Version(key), "=", 0), opts, value, cmps[1:]...)
	r.rememberLost(err, lostWrite{create: true, listRev: listRev})
	if err != nil {
		return held{}, err
	}
	h.lease.Subnet, h.lease.IPv6Subnet = v4, v6
	h.lease.CreateRevision = h.lease.ModRevision
	if v6.IsValid() {
		if err := r.checkRivals(ctx, &h, listRev); err != nil {
			return held{}, err
		}
	}
	r.log.Info("acquired new subnet lease", "key", key)
	return h, nil
}

// freeCmps are the compares that hold when key, the key of v4/v6, does
// not exist and no other key form holds v4 (the IPv4-only key, a
// dual-stack key) or v6 (the IPv6-only key); key's own is first.
func (r *Registry) freeCmps(key string, v4, v6 netip.Prefix) []clientv3.Cmp {
	cmps := []clientv3.Cmp{clientv3.Compare(clientv3.Version(key), "=", 0)}
	if v4.IsValid() {
		k4 := r.SubnetsPrefix() + lease.LeaseKey(v4, netip.Prefix{})
		if k4 != key {
			cmps = append(cmps, clientv3.Compare(clientv3.Version(k4), "=", 0))
		}
		cmps = append(cmps, clientv3.Compare(clientv3.Version(k4+"&"), "=", 0).WithPrefix())
	}
	if v6.IsValid() {
		if k6 := r.SubnetsPrefix() + lease.LeaseKey(netip.Prefix{}, v6); k6 != key {
			cmps = append(cmps, clientv3.Compare(clientv3.Version(k6), "=", 0))
		}
	}
	return cmps
}

// grantAndPut grants an etcd lease of opts.TTL and puts key under it if
// guard (and more) hold; the etcd lease is revoked when the guard fails.
func (r *Registry) grantAndPut(ctx context.Context, key string, guard clientv3.Cmp, opts AcquireOptions, value []byte, more ...clientv3.Cmp) (held, error) {
	ttl := int64((opts.TTL + time.Second - 1) / time.Second)
	asked := time.Now()
	grant, err := r.cli.Grant(ctx, ttl)
	if err != nil {
		return held{}, fmt.Errorf("subnet: grant etcd lease for %s: %w", key, err)
	}
	// The Txn is not cut short by ctx: an agent stopped (SIGTERM) in the
	// middle of it would not know whether etcd applied it, and a Txn
	// still on its way to etcd can be applied after any check made
	// meanwhile. Waiting for the answer (at most requestTimeout) keeps
	// the outcome known in all but a lost connection.
	tctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), requestTimeout)
	resp, err := r.cli.Txn(tctx).
		If(append([]clientv3.Cmp{guard}, more...)...).
		Then(clientv3.OpPut(key, string(value), clientv3.WithLease(grant.ID))).
		Commit()
	cancel()
	now := time.Now()
	granted := time.Duration(grant.TTL) * time.Second
	h := held{
		lease:   lease.Lease{Attrs: opts.Attrs, Expiration: now.Add(granted)},
		id:      grant.ID,
		ttl:     granted,
		renewed: now,
		value:   value,
	}
	if err != nil {
		// The answer was lost, not necessarily the Txn. If the key is on
		// the etcd lease the Txn was applied: the lease is held. If not,
		// it may yet be applied: the next attempt settles it (settle).
		if rev, ok := r.keyOnLease(ctx, key, grant.ID); ok {
			h.lease.ModRevision = rev
			return h, nil
		}
		r.log.Debug("lease write failed; settled by the next attempt", "key", key,
			"lease_id", fmt.Sprintf("%x", int64(grant.ID)), "ttl", granted)
		return held{}, &unsettledWrite{lostWrite{key: key, id: grant.ID, ttl: granted, asked: asked, value: value}, err}
	}
	if !resp.Succeeded {
		r.revoke(ctx, grant.ID)
		return held{}, fmt.Errorf("%w: %s was taken or changed", ErrLeaseConflict, key)
	}
	h.lease.ModRevision = resp.Header.GetRevision()
	return h, nil
}

// lostWrite is a lease write whose answer was lost: it may have been
// applied, or be applied later, under the etcd lease id.
type lostWrite struct {
	key string
	id  clientv3.LeaseID
	// ttl is the etcd lease's as granted, asked when the Grant was sent:
	// it expires at most ttl after.
	ttl   time.Duration
	asked time.Time
	value []byte
	// create is set for a new key (guarded by its absence, listed at
	// listRev); else the write moved this host's key onto the etcd lease
	// (guarded by its ModRevision) from the etcd lease replaces.
	create   bool
	listRev  int64
	replaces clientv3.LeaseID
}

// unsettledWrite is the error of a lease write whose answer was lost.
type unsettledWrite struct {
	w   lostWrite
	err error
}

func (e *unsettledWrite) Error() string {
	return fmt.Sprintf("subnet: write lease %s: %v", e.w.key, e.err)
}
func (e *unsettledWrite) Unwrap() error { return e.err }

// rememberLost records the write of err, when its answer was lost, for
// settle, with what kind of write it was (as in kind).
func (r *Registry) rememberLost(err error, kind lostWrite) {
	uw := (*unsettledWrite)(nil)
	if !errors.As(err, &uw) {
		return
	}
	w := uw.w
	w.create, w.listRev, w.replaces = kind.create, kind.listRev, kind.replaces
	r.mu.Lock()
	r.lost = append(r.lost, w)
	r.mu.Unlock()
}

// takeLost returns this host's key as listed in entries when it is on the
// etcd lease of one of its writes whose answer was lost, with that write's
// value: the write was applied, and the key is held as it is, with no
// other Grant and Txn. A new key's write is checked for rivals as create
// does. replaced is the etcd lease the key was on before the write, which
// holds nothing now (0 for a new key).
func (r *Registry) takeLost(ctx context.Context, cfg *lease.Config, opts AcquireOptions, entries []entry) (_ held, replaced clientv3.LeaseID, _ bool) {
	r.mu.Lock()
	lost := append([]lostWrite(nil), r.lost...)
	r.mu.Unlock()
	for _, w := range lost {
		for i := range entries {
			e := &entries[i]
			if r.SubnetsPrefix()+e.key != w.key || e.etcdLease != w.id || !bytes.Equal(e.value, w.value) ||
				!cfg.Fits(e.lease.Subnet, e.lease.IPv6Subnet) {
				continue
			}
			h := held{lease: e.lease, id: w.id, ttl: w.ttl, renewed: w.asked, value: w.value}
			h.lease.Attrs = opts.Attrs
			h.lease.Expiration = w.asked.Add(w.ttl)
			if w.create && h.lease.IPv6Subnet.IsValid() {
				if err := r.checkRivals(ctx, &h, w.listRev); err != nil {
					r.log.Info("not taking the key of a lease write whose answer was lost", "key", w.key, "err", err)
					return held{}, 0, false
				}
			}
			r.log.Info("took the key of a lease write whose answer was lost", "key", w.key,
				"lease_id", fmt.Sprintf("%x", int64(w.id)))
			return h, w.replaces, true
		}
	}
	return held{}, 0, false
}

// settle revokes the etcd leases of lease writes whose answer was lost,
// once what they can still do is known; keep (the etcd lease of the key
// now held) is never revoked.
//
// Before an attempt writes (onlyNew), those of new keys: such a write can
// still be applied after the list the attempt decided on (a request held
// up in a member that lost its leader, or on its way when the client gave
// up), and the host would then hold two keys: the one the attempt writes,
// and that one, a subnet nobody renews or releases until its etcd lease's
// TTL (a day) ends. Revoked, the etcd lease deletes the key if it was
// applied, and a write applied later fails: the lease it names is gone.
// Deleting such a key is safe, as this host never took it as its own
// (takeLost takes it first when the list shows it). A revocation that
// fails is returned, so that the attempt waits and tries again.
//
// Once a key is held (by a write of this attempt or taken as it is), all
// the others: a write that moved this host's key onto a new etcd lease
// was guarded by the key's ModRevision, which has changed since (or the
// key would be held through it), so it can no longer be applied, and its
// etcd lease holds nothing. Revoking it earlier could delete the host's
// key, which peers see as this host leaving. What fails is kept for the
// next acquisition, and the etcd lease expires meanwhile (settleAll).
func (r *Registry) settle(ctx context.Context, keep clientv3.LeaseID, onlyNew bool) error {
	r.mu.Lock()
	lost := r.lost
	r.lost = nil
	r.mu.Unlock()
	var left []lostWrite
	var errs []error
	for _, w := range lost {
		if w.id == keep {
			continue
		}
		if (onlyNew && !w.create) || len(errs) > 0 {
			left = append(left, w)
			continue
		}
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), requestTimeout)
		_, err := r.cli.Revoke(rctx, w.id)
		cancel()
		if err != nil && !errors.Is(err, rpctypes.ErrLeaseNotFound) {
			left = append(left, w)
			errs = append(errs, fmt.Errorf("subnet: revoke the etcd lease %x of a lease write whose answer was lost: %w", int64(w.id), err))
			continue
		}
		r.log.Info("revoked the etcd lease of a lease write whose answer was lost", "key", w.key, "lease_id", fmt.Sprintf("%x", int64(w.id)))
	}
	r.mu.Lock()
	r.lost = append(left, r.lost...)
	r.mu.Unlock()
	return errors.Join(errs...)
}

// settleAll is settle once a key is held (keep its etcd lease): a failure
// is only logged.
func (r *Registry) settleAll(ctx context.Context, keep clientv3.LeaseID) {
	if err := r.settle(ctx, keep, false); err != nil {
		r.log.Warn("cannot revoke the etcd lease of a lease write whose answer was lost: revoked by the next acquisition, or expires", "err", err)
	}
}

// keyOnLease reports whether key is attached to the etcd lease id, and its
// ModRevision if so, asking etcd even when ctx is done. When etcd cannot
// tell, it answers false.
func (r *Registry) keyOnLease(ctx context.Context, key string, id clientv3.LeaseID) (int64, bool) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), requestTimeout)
	defer cancel()
	resp, err := r.cli.Get(ctx, key)
	if err != nil || len(resp.Kvs) == 0 || resp.Kvs[0].Lease != int64(id) {
		return 0, false
	}
	return resp.Kvs[0].ModRevision, true
}

// checkRivals looks for keys created since the list at listRev that hold
// one of h's subnets in another key form. The older key wins: when a rival
// is older, h's key is deleted and ErrLeaseConflict returned.
func (r *Registry) checkRivals(ctx context.Context, h *held, listRev int64) error {
	key := r.leaseKey(&h.lease)
	resp, err := r.cli.Get(ctx, r.SubnetsPrefix(), clientv3.WithPrefix(), clientv3.WithKeysOnly(),
		clientv3.WithMinCreateRev(listRev+1), clientv3.WithMaxCreateRev(h.lease.CreateRevision-1))
	if err != nil {
		r.release(ctx, h)
		return fmt.Errorf("subnet: check new lease %s: %w", key, err)
	}
	for _, kv := range resp.Kvs {
		v4, v6, err := lease.ParseLeaseKey(strings.TrimPrefix(string(kv.Key), r.SubnetsPrefix()))
		if err != nil {
			continue
		}
		if (v6.IsValid() && v6.Overlaps(h.lease.IPv6Subnet)) || (v4.IsValid() && h.lease.Subnet.IsValid() && v4.Overlaps(h.lease.Subnet)) {
			r.release(ctx, h)
			return fmt.Errorf("%w: %s was taken first as %s", ErrLeaseConflict, key, kv.Key)
		}
	}
	return nil
}

// release deletes a key just created (guarded by its CreateRevision) and
// revokes its etcd lease.
func (r *Registry) release(ctx context.Context, h *held) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), requestTimeout)
	defer cancel()
	key := r.leaseKey(&h.lease)
	_, err := r.cli.Txn(ctx).
		If(clientv3.Compare(clientv3.CreateRevision(key), "=", h.lease.CreateRevision)).
		Then(clientv3.OpDelete(key)).
		Commit()
	if err != nil {
		r.log.Warn("cannot delete lost lease: it expires with its etcd lease", "key", key, "err", err)
	}
	r.revoke(ctx, h.id)
}

// revoke revokes an etcd lease that no key should keep, even when ctx is
// done; a failure is logged (the etcd lease then just expires).
func (r *Registry) revoke(ctx context.Context, id clientv3.LeaseID) {
	if id == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), requestTimeout)
	defer cancel()
	if _, err := r.cli.Revoke(ctx, id); err != nil {
		r.log.Warn("cannot revoke unused etcd lease: it will expire", "lease_id", fmt.Sprintf("%x", int64(id)), "err", err)
	}
}
