package masq

import (
	"context"
	"errors"
	"log/slog"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"
)

// failingManager fails every Apply, counting them; past limit attempts
// it stops the keeper (a busy loop would otherwise never let fake time
// advance).
type failingManager struct {
	applies atomic.Int64
	limit   int64
	stop    context.CancelFunc
}

func (m *failingManager) Apply(context.Context, Rules) error {
	if m.applies.Add(1) > m.limit {
		m.stop()
	}
	return errors.New("ip6tables: command not found")
}
func (m *failingManager) Check(context.Context, Rules) (bool, string, error) { return false, "", nil }
func (m *failingManager) Remove(context.Context) error                       { return nil }

// TestKeeperRetryCapped: while Apply keeps failing (say, dual stack on a
// host without ip6tables), the keeper retries after 1 s, 2 s, … up to the
// interval and then once an interval, for as long as the failures last:
// the delay never overflows into a busy loop. Fake time: the counts are
// exact.
func TestKeeperRetryCapped(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const interval = 8 * time.Second
		const hours = 3 * time.Hour
		ctx, cancel := context.WithCancel(t.Context())
		m := &failingManager{limit: 5 + int64(hours/interval), stop: cancel}
		k := NewKeeper(slog.New(slog.DiscardHandler), m, rulesA, interval)
		done := make(chan error, 1)
		go func() { done <- k.Run(ctx) }()

		// Attempts at 0, 1, 3, 7 s (waits 1, 2, 4 s), then every 8 s.
		synctest.Wait()
		at := time.Duration(0)
		check := func(want int64) {
			t.Helper()
			if got := m.applies.Load(); got != want {
				t.Fatalf("%v into the failures: %d attempts, want %d", at, got, want)
			}
		}
		check(1)
		for _, step := range []struct {
			d    time.Duration
			want int64
		}{{time.Second, 2}, {2 * time.Second, 3}, {4 * time.Second, 4}, {interval, 5}} {
			time.Sleep(step.d - time.Nanosecond)
			synctest.Wait()
			at += step.d - time.Nanosecond
			check(step.want - 1)
			time.Sleep(time.Nanosecond)
			synctest.Wait()
			at += time.Nanosecond
			check(step.want)
		}
		// Hours of failures: one attempt an interval, never more (the
		// uncapped delay overflowed after about 33 doublings).
		time.Sleep(hours)
		synctest.Wait()
		at += hours
		check(5 + int64(hours/interval))
		cancel()
		if err := <-done; err != nil {
			t.Fatalf("Run = %v after cancel", err)
		}
	})
}
