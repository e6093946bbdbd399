package masq

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"
)

// Keeper keeps a Manager's rules in the kernel: it applies them at once,
// then every interval and whenever it is kicked, so that rules others
// deleted or changed come back within one interval (each repair is logged
// by the Manager). Update changes the rules it keeps, for a new lease or
// network: the next pass replaces the old rules. Run it in the goroutine
// (or locked thread) whose network namespace the rules are for.
//
// To switch masquerading off, stop Run (cancel its ctx) and call the
// Manager's Remove.
type Keeper struct {
	log      *slog.Logger
	m        Manager
	interval time.Duration
	kick     chan struct{}
	applied  atomic.Uint64

	mu    sync.Mutex
	rules Rules
}

// minRetry is the first delay before retrying a failed Apply; it doubles
// up to the interval, and stays there.
const minRetry = time.Second

// NewKeeper returns a Keeper of r through m. interval must be positive.
func NewKeeper(log *slog.Logger, m Manager, r Rules, interval time.Duration) *Keeper {
	return &Keeper{log: log, m: m, interval: interval, rules: r, kick: make(chan struct{}, 1)}
}

// Update makes r the rules to keep and applies them soon.
func (k *Keeper) Update(r Rules) {
	k.mu.Lock()
	k.rules = r
	k.mu.Unlock()
	k.Kick()
}

// Rules returns the rules being kept.
func (k *Keeper) Rules() Rules {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.rules
}

// Applied returns how many times Run has applied the rules successfully.
// A pass that starts after a change in the kernel (or an Update) repairs
// it (or applies the new rules): once Applied has grown by two since, the
// rules were in place at some point after the change.
func (k *Keeper) Applied() uint64 { return k.applied.Load() }

// Kick makes Run apply the rules now rather than at the end of the
// interval. It never blocks.
func (k *Keeper) Kick() {
	select {
	case k.kick <- struct{}{}:
	default:
	}
}

// Run applies the rules now, then every interval and on each Kick or
// Update, until ctx is done; then it returns nil. A failed Apply is logged
// and retried after 1 s, doubling up to the interval. Run returns an error
// only for an interval that is not positive.
func (k *Keeper) Run(ctx context.Context) error {
	if k.interval <= 0 {
		return errors.New("masq: keeper interval must be positive")
	}
	retry := minRetry
	for {
		wait := k.interval
		if err := k.m.Apply(ctx, k.Rules()); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			wait = min(retry, k.interval)
			k.log.Warn("masquerade rules not applied", "err", err, "retry_in", wait)
			// Capped: doubling without a cap overflowed to a negative,
			// then zero, delay after about 80 s of failures: a busy loop.
			retry = min(retry*2, k.interval)
		} else {
			retry = minRetry
			k.applied.Add(1)
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-k.kick:
			t.Stop()
		case <-t.C:
		}
	}
}

// Keep keeps r through m until ctx is done: NewKeeper(log, m, r,
// interval).Run(ctx). Use a Keeper to change the rules while it runs.
func Keep(ctx context.Context, log *slog.Logger, m Manager, r Rules, interval time.Duration) error {
	return NewKeeper(log, m, r, interval).Run(ctx)
}
