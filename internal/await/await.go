// Package await waits for a condition to become true, by polling it, for
// tests and for commands that wait on state they cannot be told about
// (another process's files, a kernel table, an agent's status).
//
// The deadline of a wait only bounds a hang: it is never the assertion. A
// test that wants to know that something happened asserts the state (or a
// counter) once the wait is over, and gives the wait a generous deadline,
// since CI runs packages in parallel on a loaded machine.
//
// The package imports nothing heavier than context and time, so that any
// test or command can use it.
package await

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// Interval is how often Eventually calls its condition.
const Interval = 50 * time.Millisecond

// Poll calls f, then again every interval, until f returns nil; it then
// returns nil. When ctx is done first, it returns f's last error (wrapped
// with ctx's error, so that errors.Is(err, context.DeadlineExceeded)
// holds).
func Poll(ctx context.Context, interval time.Duration, f func() error) error {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		err := f()
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w: %w", ctx.Err(), err)
		case <-t.C:
		}
	}
}

// TB is the part of testing.TB that Eventually uses (the package does not
// import testing).
type TB interface {
	Helper()
	Fatalf(format string, args ...any)
}

// Eventually calls f every Interval until it returns nil. When timeout
// passes first, it ends the test with what and f's last error. The
// timeout only bounds a hang: make it generous.
func Eventually(t TB, timeout time.Duration, what string, f func() error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	if err := Poll(ctx, Interval, f); err != nil {
		t.Fatalf("%s: not within %v: %v", what, timeout, err)
	}
}

// True adapts a condition without a reason to f of Poll and Eventually:
// the error it returns while cond is false says only "not yet".
func True(cond func() bool) func() error {
	return func() error {
		if !cond() {
			return errNotYet
		}
		return nil
	}
}

var errNotYet = fmt.Errorf("await: not yet")

// Until is Eventually for a condition that says why it does not hold yet:
// cond returns "" once it holds, and otherwise the reason, which the
// failure reports.
func Until(t TB, timeout time.Duration, cond func() string) {
	t.Helper()
	Eventually(t, timeout, "condition", func() error {
		if why := cond(); why != "" {
			return errors.New(why)
		}
		return nil
	})
}
