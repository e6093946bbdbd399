package probe

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"syscall"
	"time"
)

// Bounds of the wait before a failed responder is opened again: it
// doubles from the first to the second.
const (
	DefaultResponderRetryMin = time.Second
	DefaultResponderRetryMax = 30 * time.Second
)

// ResponderState is what a ResponderKeeper knows about its responder.
type ResponderState struct {
	// Serving is true while the responder's sockets are bound and
	// answering; Err is why not (the bind or read error), empty while
	// serving or before the first attempt.
	Serving bool
	Err     string
	// Since is when Serving or Err last changed; Failures counts the
	// attempts that failed since the keeper started.
	Since    time.Time
	Failures int
	// Replies, Dropped and Refused sum the counters of every responder
	// the keeper opened (see Responder).
	Replies, Dropped, Refused uint64
}

// ResponderKeeper keeps a Responder serving: it opens it, serves, and
// when opening or serving fails (a port taken, a socket error) records
// the error and opens it again after a capped exponential backoff, until
// ctx is done. A responder that fails therefore shows in State at once
// and serves again as soon as it can.
type ResponderKeeper struct {
	cfg      ResponderConfig
	min, max time.Duration

	mu      sync.Mutex
	st      ResponderState
	cur     *Responder
	sources *Sources
}

// NewResponderKeeper returns a keeper of a responder of cfg, retrying
// after waits doubling from retryMin to retryMax
// (DefaultResponderRetryMin and DefaultResponderRetryMax when zero).
func NewResponderKeeper(cfg ResponderConfig, retryMin, retryMax time.Duration) *ResponderKeeper {
	if retryMin <= 0 {
		retryMin = DefaultResponderRetryMin
	}
	if retryMax < retryMin {
		retryMax = max(DefaultResponderRetryMax, retryMin)
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	return &ResponderKeeper{cfg: cfg, min: retryMin, max: retryMax, sources: cfg.Sources}
}

// SetSources replaces the sources answered, for the current responder
// and the next ones (see Responder.SetSources).
func (k *ResponderKeeper) SetSources(s *Sources) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.sources = s
	if k.cur != nil {
		k.cur.SetSources(s)
	}
}

// State returns a snapshot of the responder's state and counters.
func (k *ResponderKeeper) State() ResponderState {
	k.mu.Lock()
	defer k.mu.Unlock()
	st := k.st
	if k.cur != nil {
		st.Replies += k.cur.Replies()
		st.Dropped += k.cur.Dropped()
		st.Refused += k.cur.Refused()
	}
	return st
}

// Run keeps the responder serving until ctx is done. When it returns,
// every socket it opened is closed: a new responder may bind the port.
func (k *ResponderKeeper) Run(ctx context.Context) {
	wait := k.min
	for ctx.Err() == nil {
		err := k.serveOnce(ctx)
		if ctx.Err() != nil {
			return
		}
		k.failed(err)
		d := wait/2 + rand.N(wait/2+1)
		wait = min(2*wait, k.max)
		t := time.NewTimer(d)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}

// serveOnce opens a responder and serves until it fails or ctx is done.
func (k *ResponderKeeper) serveOnce(ctx context.Context) error {
	k.mu.Lock()
	cfg := k.cfg
	cfg.Sources = k.sources
	k.mu.Unlock()
	r, err := NewResponder(cfg)
	if errors.Is(err, syscall.EADDRINUSE) {
		return fmt.Errorf("%w: UDP port %d is taken on this host (by another program, or another netagent instance: give each instance its own --probe-port, the same on all its hosts)", err, cfg.Port)
	}
	if err != nil {
		return err
	}
	k.mu.Lock()
	// Sources may have changed while the sockets were opened.
	r.SetSources(k.sources)
	k.cur = r
	recovered := k.st.Err != ""
	k.st.Serving, k.st.Err, k.st.Since = true, "", time.Now()
	k.mu.Unlock()
	if recovered {
		k.cfg.Log.Info("probe responder serving again", "addrs", cfg.Addrs, "port", cfg.Port)
	}
	err = r.Serve(ctx)
	k.mu.Lock()
	k.st.Replies += r.Replies()
	k.st.Dropped += r.Dropped()
	k.st.Refused += r.Refused()
	k.cur = nil
	k.st.Serving = false
	k.mu.Unlock()
	return err
}

// failed records and logs a failed attempt (once per distinct error at
// error level, repeats at debug).
func (k *ResponderKeeper) failed(err error) {
	k.mu.Lock()
	msg := err.Error()
	repeat := msg == k.st.Err
	k.st.Serving, k.st.Err, k.st.Failures = false, msg, k.st.Failures+1
	if !repeat {
		k.st.Since = time.Now()
	}
	k.mu.Unlock()
	if repeat {
		k.cfg.Log.Debug("probe responder still not serving", "err", err)
		return
	}
	k.cfg.Log.Error("probe responder not serving; retrying", "addrs", k.cfg.Addrs, "err", err)
}
