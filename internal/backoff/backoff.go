// Package backoff spaces out the retries of something that fails: a capped
// exponential backoff, with or without jitter.
package backoff

import (
	"math/rand/v2"
	"time"
)

// Backoff hands out the waits between retries: first, then twice the last
// wait, never more than limit, until Reset. It is not safe for concurrent
// use; each retry loop has its own.
type Backoff struct {
	first, limit, cur time.Duration
	jitter            bool
}

// New returns a Backoff whose waits are first, 2×first, 4×first, … up to
// limit. A first above limit is taken as limit.
func New(first, limit time.Duration) *Backoff {
	first = max(0, min(first, limit))
	return &Backoff{first: first, limit: limit, cur: first}
}

// NewJittered is New with each wait drawn at random from [d/2, d], d being
// the wait New would give, so that many clients that failed together do
// not retry together.
func NewJittered(first, limit time.Duration) *Backoff {
	b := New(first, limit)
	b.jitter = true
	return b
}

// Next returns the wait before the next retry and doubles the one after,
// up to the limit.
func (b *Backoff) Next() time.Duration {
	d := b.cur
	if b.cur > b.limit/2 {
		b.cur = b.limit // doubling would pass it, or overflow
	} else {
		b.cur *= 2
	}
	if b.jitter {
		return d/2 + rand.N(d-d/2+1)
	}
	return d
}

// Reset starts the waits again from first, after a success.
func (b *Backoff) Reset() { b.cur = b.first }
