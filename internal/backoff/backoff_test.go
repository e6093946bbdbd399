package backoff

import (
	"slices"
	"testing"
	"time"
)

func TestNext(t *testing.T) {
	ms := time.Millisecond
	for _, tt := range []struct {
		name         string
		first, limit time.Duration
		want         []time.Duration
	}{
		{"doubles up to the limit", 100 * ms, 1000 * ms, []time.Duration{100 * ms, 200 * ms, 400 * ms, 800 * ms, 1000 * ms, 1000 * ms}},
		{"limit not a power of two of first", 300 * ms, 1000 * ms, []time.Duration{300 * ms, 600 * ms, 1000 * ms, 1000 * ms}},
		{"first above limit", 5 * time.Second, time.Second, []time.Duration{time.Second, time.Second}},
		{"first equals limit", time.Second, time.Second, []time.Duration{time.Second, time.Second}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			b := New(tt.first, tt.limit)
			var got []time.Duration
			for range tt.want {
				got = append(got, b.Next())
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("waits %v, want %v", got, tt.want)
			}
			b.Reset()
			if d := b.Next(); d != tt.want[0] {
				t.Errorf("after Reset: %v, want %v", d, tt.want[0])
			}
		})
	}
}

// TestNextNeverOverflows: doubling stays at the limit however many
// failures come, even a limit near the largest Duration.
func TestNextNeverOverflows(t *testing.T) {
	const limit = time.Duration(1<<62 + 1<<61)
	b := New(time.Nanosecond, limit)
	for i := range 200 {
		if d := b.Next(); d <= 0 || d > limit {
			t.Fatalf("wait %d: %v, want in (0, %v]", i, d, limit)
		}
	}
}

func TestNextJittered(t *testing.T) {
	const first, limit = 100 * time.Millisecond, 400 * time.Millisecond
	plain := New(first, limit)
	for run := range 50 {
		b := NewJittered(first, limit)
		plain.Reset()
		for i := range 5 {
			d, full := b.Next(), plain.Next()
			if d < full/2 || d > full {
				t.Fatalf("run %d wait %d: %v, want in [%v, %v]", run, i, d, full/2, full)
			}
		}
	}
}
