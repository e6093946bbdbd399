package await

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"testing/synctest"
	"time"
)

func TestPollReturnsOnceTrue(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		calls := 0
		err := Poll(t.Context(), time.Second, func() error {
			calls++
			if calls < 3 {
				return fmt.Errorf("call %d", calls)
			}
			return nil
		})
		if err != nil || calls != 3 {
			t.Fatalf("Poll = %v after %d calls; want nil after 3", err, calls)
		}
	})
}

func TestPollReturnsLastErrorWhenDone(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
		defer cancel()
		calls := 0
		err := Poll(ctx, time.Second, func() error {
			calls++
			return fmt.Errorf("call %d", calls)
		})
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("Poll = %v; want it to wrap context.DeadlineExceeded", err)
		}
		if want := fmt.Sprintf("call %d", calls); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Poll = %v; want the last error %q", err, want)
		}
	})
}

// fakeTB records Fatalf instead of ending the test.
type fakeTB struct{ failed string }

func (*fakeTB) Helper() {}
func (f *fakeTB) Fatalf(format string, args ...any) {
	f.failed = fmt.Sprintf(format, args...)
}

func TestEventually(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var ok fakeTB
		n := 0
		Eventually(&ok, time.Minute, "n reaches 5", True(func() bool { n++; return n >= 5 }))
		if ok.failed != "" {
			t.Errorf("a condition that became true failed: %s", ok.failed)
		}
		var never fakeTB
		Eventually(&never, time.Minute, "never", True(func() bool { return false }))
		if !strings.Contains(never.failed, "never: not within 1m0s") || !strings.Contains(never.failed, "not yet") {
			t.Errorf("a condition that stayed false: %q; want what, the timeout and the last error", never.failed)
		}
	})
}

func TestUntil(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var ok fakeTB
		n := 0
		Until(&ok, time.Minute, func() string {
			if n++; n < 5 {
				return fmt.Sprintf("n is %d", n)
			}
			return ""
		})
		if ok.failed != "" || n != 5 {
			t.Errorf("a condition that came to hold at the 5th call: failed %q after %d calls", ok.failed, n)
		}
		var never fakeTB
		calls := 0
		Until(&never, time.Minute, func() string { calls++; return fmt.Sprintf("still %d", calls) })
		if !strings.Contains(never.failed, "not within 1m0s") || !strings.Contains(never.failed, fmt.Sprintf("still %d", calls)) {
			t.Errorf("a condition that never held: %q; want the timeout and the last reason (call %d)", never.failed, calls)
		}
	})
}
