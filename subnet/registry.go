package subnet

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/netagent/netagent/internal/backoff"
	"github.com/netagent/netagent/lease"
)

// ErrNoConfig is returned when <prefix>/config does not exist.
var ErrNoConfig = errors.New("subnet: no network config")

// requestTimeout bounds each etcd request made by a background loop, so that
// an unreachable store turns into a retry instead of a hang.
const requestTimeout = 10 * time.Second

// Registry is the agent's access to <prefix> in etcd: the network config,
// its own lease and the watch of every lease. It is safe for concurrent use.
type Registry struct {
	cli    *clientv3.Client
	prefix string
	log    *slog.Logger
	stats  registryStats

	// lost are the lease writes whose answer was lost and whose etcd
	// lease is not revoked yet (see settle); mu guards it.
	mu   sync.Mutex
	lost []lostWrite
}

// Stats count what the Registry's background loops did since it was made.
type Stats struct {
	// Renewals and RenewalFailures count the lease renewal attempts of
	// every Holder of the Registry.
	Renewals, RenewalFailures uint64
	// LeaseLosses counts the leases a Holder of the Registry found lost
	// (key deleted, etcd lease expired, key rewritten by someone else) and
	// set out to re-acquire.
	LeaseLosses uint64
	// LeaseRestores counts the times a Holder found its key deleted or
	// overwritten while its etcd lease lived (a hand-written or garbage
	// value, not a reservation nor another agent's lease naming this
	// host's public IP) and wrote its value back.
	LeaseRestores uint64
	// WatchRestarts counts the lease watches that broke (compaction, lost
	// leader, closed stream) and were listed and started again.
	WatchRestarts uint64
}

type registryStats struct {
	renewals, renewalFailures, leaseLosses, leaseRestores, watchRestarts atomic.Uint64
}

// Stats returns the Registry's counters; safe for concurrent use.
func (r *Registry) Stats() Stats {
	return Stats{
		Renewals:        r.stats.renewals.Load(),
		RenewalFailures: r.stats.renewalFailures.Load(),
		LeaseLosses:     r.stats.leaseLosses.Load(),
		LeaseRestores:   r.stats.leaseRestores.Load(),
		WatchRestarts:   r.stats.watchRestarts.Load(),
	}
}

// NewRegistry returns a Registry for the keys under prefix (for example
// "/coreos.com/network"; a trailing slash is ignored). A nil log discards.
func NewRegistry(cli *clientv3.Client, prefix string, log *slog.Logger) *Registry {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Registry{cli: cli, prefix: strings.TrimRight(prefix, "/"), log: log}
}

// ConfigKey is the key of the network config, <prefix>/config.
func (r *Registry) ConfigKey() string { return r.prefix + "/config" }

// SubnetsPrefix is the directory of the leases, <prefix>/subnets/.
func (r *Registry) SubnetsPrefix() string { return r.prefix + "/subnets/" }

// leaseKey is the full etcd key of a lease.
func (r *Registry) leaseKey(l *lease.Lease) string { return r.SubnetsPrefix() + l.Key() }

// Config reads and parses <prefix>/config. It returns ErrNoConfig when the
// key is absent, an error wrapping ErrInvalidConfig when it does not parse,
// and the store revision of the read.
func (r *Registry) Config(ctx context.Context) (*lease.Config, int64, error) {
	resp, err := r.cli.Get(ctx, r.ConfigKey())
	if err != nil {
		return nil, 0, fmt.Errorf("subnet: read %s: %w", r.ConfigKey(), err)
	}
	rev := resp.Header.GetRevision()
	if len(resp.Kvs) == 0 {
		return nil, rev, fmt.Errorf("%w at %s", ErrNoConfig, r.ConfigKey())
	}
	cfg, err := lease.ParseConfig(resp.Kvs[0].Value)
	if err != nil {
		return nil, rev, fmt.Errorf("%s: %w", r.ConfigKey(), err)
	}
	return cfg, rev, nil
}

// WaitConfig returns the first usable network config. While the key is
// missing or invalid it logs why (once per change of the reason, not per
// retry) and waits for the key to change; unreachable etcd is retried with
// backoff. It returns only a config or ctx's error.
func (r *Registry) WaitConfig(ctx context.Context) (*lease.Config, error) {
	var lastReason string
	bo := backoff.NewJittered(500*time.Millisecond, 30*time.Second)
	for {
		// Bounded: an unreachable etcd (or one whose TLS handshake fails)
		// makes a request wait for a connection, not fail, until its
		// deadline; the error then says why.
		rctx, cancel := context.WithTimeout(ctx, requestTimeout)
		cfg, rev, err := r.Config(rctx)
		cancel()
		if err == nil {
			if lastReason != "" {
				r.log.Info("network config is usable now", "key", r.ConfigKey())
			}
			return cfg, nil
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		if reason := err.Error(); reason != lastReason {
			lastReason = reason
			switch {
			case errors.Is(err, ErrNoConfig):
				r.log.Warn("network config is missing: waiting for it to be written", "key", r.ConfigKey())
			case errors.Is(err, lease.ErrInvalidConfig):
				r.log.Error("network config is invalid: waiting for it to be fixed", "key", r.ConfigKey(), "err", err)
			default:
				r.log.Warn("cannot read network config: retrying", "key", r.ConfigKey(), "err", err)
			}
		}
		if !errors.Is(err, ErrNoConfig) && !errors.Is(err, lease.ErrInvalidConfig) {
			if err := sleepCtx(ctx, bo.Next()); err != nil {
				return nil, err
			}
			continue
		}
		bo.Reset()
		if err := r.waitKeyChange(ctx, r.ConfigKey(), rev); err != nil {
			return nil, err
		}
	}
}

// waitKeyChange returns when key changes after revision rev, when the watch
// fails (the caller re-reads), or with ctx's error.
func (r *Registry) waitKeyChange(ctx context.Context, key string, rev int64) error {
	wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	defer cancel()
	for resp := range r.cli.Watch(wctx, key, clientv3.WithRev(rev+1)) {
		if resp.Err() != nil || len(resp.Events) > 0 {
			break
		}
	}
	return ctx.Err()
}

// ConfigUpdate is one state of the network config key, as WatchConfig
// delivers it.
type ConfigUpdate struct {
	// Config is the parsed config; nil when Err is set.
	Config *lease.Config
	// Err is ErrNoConfig (key absent or deleted) or wraps ErrInvalidConfig.
	Err error
	// Revision is the key's ModRevision (0 when absent).
	Revision int64
}

// WatchConfig delivers the config key's current state, then its state after
// each change, until ctx is done (then the channel is closed). A receiver
// that falls behind gets the latest state only. Compaction and reconnects
// are handled by re-reading the key.
func (r *Registry) WatchConfig(ctx context.Context) <-chan ConfigUpdate {
	out := make(chan ConfigUpdate, 1)
	go func() {
		defer close(out)
		bo := backoff.NewJittered(500*time.Millisecond, 30*time.Second)
		lastMod := int64(-1)
		publish := func(u ConfigUpdate) {
			if u.Revision == lastMod {
				return
			}
			lastMod = u.Revision
			select { // Drop a stale undelivered state: only the latest counts.
			case <-out:
			default:
			}
			out <- u
		}
		for ctx.Err() == nil {
			rctx, cancel := context.WithTimeout(ctx, requestTimeout)
			resp, err := r.cli.Get(rctx, r.ConfigKey())
			cancel()
			if err != nil {
				if ctx.Err() == nil {
					r.log.Warn("cannot read network config: retrying", "key", r.ConfigKey(), "err", err)
				}
				sleepCtx(ctx, bo.Next())
				continue
			}
			bo.Reset()
			var kv *mvccpb.KeyValue
			if len(resp.Kvs) > 0 {
				kv = resp.Kvs[0]
			}
			publish(r.configUpdate(kv))
			wctx, wcancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
			for wr := range r.watch(wctx, r.ConfigKey(), clientv3.WithRev(resp.Header.GetRevision()+1)) {
				if wr.Err() != nil {
					break
				}
				bo.Reset()
				for _, ev := range wr.Events {
					if ev.Type == clientv3.EventTypeDelete {
						publish(r.configUpdate(nil))
					} else {
						publish(r.configUpdate(ev.Kv))
					}
				}
			}
			wcancel()
			// The watch broke (compaction, lost leader, closed client):
			// read the key again, not in a tight loop.
			sleepCtx(ctx, bo.Next())
		}
	}()
	return out
}

func (r *Registry) configUpdate(kv *mvccpb.KeyValue) ConfigUpdate {
	if kv == nil {
		return ConfigUpdate{Err: fmt.Errorf("%w at %s", ErrNoConfig, r.ConfigKey())}
	}
	cfg, err := lease.ParseConfig(kv.Value)
	if err != nil {
		return ConfigUpdate{Err: fmt.Errorf("%s: %w", r.ConfigKey(), err), Revision: kv.ModRevision}
	}
	return ConfigUpdate{Config: cfg, Revision: kv.ModRevision}
}

// Leases lists every well-formed lease under <prefix>/subnets/ with one
// Range request, and returns the store revision of the list. Reservations
// (keys without an etcd lease) have Reservation set; Expiration is not
// asked for. Malformed keys and values are skipped with a warning.
func (r *Registry) Leases(ctx context.Context) ([]lease.Lease, int64, error) {
	entries, rev, err := r.list(ctx, false)
	if err != nil {
		return nil, 0, err
	}
	leases := make([]lease.Lease, 0, len(entries))
	for _, e := range entries {
		if e.err == nil {
			leases = append(leases, e.lease)
		}
	}
	return leases, rev, nil
}

// entry is one key under <prefix>/subnets/ whose key parses. err is set when
// its value does not (the subnets still count as taken).
type entry struct {
	// key is the key relative to <prefix>/subnets/, as stored.
	key   string
	lease lease.Lease
	// etcdLease is the etcd lease the key is attached to (0: none).
	etcdLease clientv3.LeaseID
	value     []byte
	err       error
}

// list reads every key under <prefix>/subnets/ in one Range request.
// Keys that do not parse are skipped with a warning; keys whose value does
// not parse are returned with err set (and warned about). A serializable
// list is served by the member asked, from what it has applied, without
// asking the leader: it can be behind (see tryAcquire).
func (r *Registry) list(ctx context.Context, serializable bool) ([]entry, int64, error) {
	opts := []clientv3.OpOption{clientv3.WithPrefix()}
	if serializable {
		opts = append(opts, clientv3.WithSerializable())
	}
	resp, err := r.cli.Get(ctx, r.SubnetsPrefix(), opts...)
	if err != nil {
		return nil, 0, fmt.Errorf("subnet: list %s: %w", r.SubnetsPrefix(), err)
	}
	entries := make([]entry, 0, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		e, ok := r.parseKV(kv)
		if ok {
			entries = append(entries, e)
		}
	}
	return entries, resp.Header.GetRevision(), nil
}

// parseKV parses a key-value under <prefix>/subnets/. ok is false when the
// key itself is malformed (warned about).
func (r *Registry) parseKV(kv *mvccpb.KeyValue) (e entry, ok bool) {
	rel := string(bytes.TrimPrefix(kv.Key, []byte(r.SubnetsPrefix())))
	v4, v6, err := lease.ParseLeaseKey(rel)
	if err != nil {
		r.log.Warn("skipping malformed lease key", "key", string(kv.Key), "err", err)
		return e, false
	}
	e.key = rel
	e.lease = lease.Lease{
		Subnet:         v4,
		IPv6Subnet:     v6,
		Reservation:    kv.Lease == 0,
		CreateRevision: kv.CreateRevision,
		ModRevision:    kv.ModRevision,
	}
	e.etcdLease = clientv3.LeaseID(kv.Lease)
	e.value = kv.Value
	if e.lease.Attrs, e.err = lease.ParseLeaseAttrs(kv.Value); e.err != nil {
		r.log.Warn("skipping lease with malformed value", "key", string(kv.Key), "err", e.err)
	}
	return e, true
}

// watch starts a watch like clientv3's Watch but returns at once: Watch
// itself blocks until the server has registered the watch, which lasts as
// long as etcd is unreachable. The channel closes when ctx is done or the
// watch ends.
func (r *Registry) watch(ctx context.Context, key string, opts ...clientv3.OpOption) clientv3.WatchChan {
	out := make(chan clientv3.WatchResponse)
	go func() {
		defer close(out)
		for wr := range r.cli.Watch(ctx, key, opts...) {
			select {
			case out <- wr:
			case <-ctx.Done():
				return
			}
		}
	}()
	return out
}

// sleepCtx waits for d or until ctx is done, returning ctx's error then.
func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
