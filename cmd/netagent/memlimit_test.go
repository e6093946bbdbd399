package main

import (
	"context"
	"fmt"
	"log/slog"
	"math"
	"runtime/debug"
	"testing"
	"time"

	"github.com/netagent/netagent/agent"
	"github.com/netagent/netagent/internal/await"
	"github.com/netagent/netagent/internal/memlimit"
)

func TestMemoryLimitOptions(t *testing.T) {
	// limit checks the limit and whether it is a floor that follows the
	// live heap (the default only).
	limit := func(want int64, floor bool) func(t *testing.T, o *optsView) {
		return func(t *testing.T, o *optsView) {
			o.eq(t, "memory limit", o.MemoryLimit, want)
			o.eq(t, "memory limit is a floor", o.MemoryLimitFloor, floor)
		}
	}
	runParseCases(t, []parseCase{
		{name: "default", check: limit(agent.DefaultMemoryLimit, true)},
		{name: "flag in MiB", args: []string{"--memory-limit=64MiB"}, check: limit(64<<20, false)},
		{name: "flag in bytes", args: []string{"--memory-limit=40000000"}, check: limit(40000000, false)},
		{name: "off", args: []string{"--memory-limit=off"}, check: limit(math.MaxInt64, false)},
		{name: "environment", env: map[string]string{"NETAGENT_MEMORY_LIMIT": "1GiB"}, check: limit(1<<30, false)},
		// The runtime has applied GOMEMLIMIT before main: it is kept.
		{name: "GOMEMLIMIT replaces the default", env: map[string]string{"GOMEMLIMIT": "100MiB"}, check: limit(0, false)},
		{name: "the flag wins over GOMEMLIMIT", args: []string{"--memory-limit=48MiB"},
			env: map[string]string{"GOMEMLIMIT": "100MiB"}, check: limit(48<<20, false)},
	})
}

func TestMemoryLimitFollowsLiveHeap(t *testing.T) {
	const floor = 28 << 20
	for _, tc := range []struct{ live, want int64 }{
		{0, floor},
		{10 << 20, floor},
		{40 << 20 / 3, floor},
		{14 << 20, 29 << 20},
		{17 << 20, 34 << 20},
		{100<<20 + 300<<10, 159 << 20},
	} {
		if got := memoryLimitFor(floor, tc.live); got != tc.want {
			t.Errorf("memoryLimitFor(28MiB, %d) = %s, want %s", tc.live, formatMemoryLimit(got), formatMemoryLimit(tc.want))
		}
	}
}

// TestMemoryLimitLifted: the default limit is lifted while a part of the
// agent asks so (userspace WireGuard) and comes back when it is done.
func TestMemoryLimitLifted(t *testing.T) {
	before := debug.SetMemoryLimit(-1)
	t.Cleanup(func() { debug.SetMemoryLimit(before) })
	const floor = 64 << 20
	debug.SetMemoryLimit(floor)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { keepMemoryLimit(ctx, slog.New(slog.DiscardHandler), floor); close(done) }()
	t.Cleanup(func() { cancel(); <-done })

	limitIs := func(what string, want func(int64) bool) {
		t.Helper()
		await.Eventually(t, time.Minute, what, func() error {
			if got := debug.SetMemoryLimit(-1); !want(got) {
				return fmt.Errorf("limit %s", formatMemoryLimit(got))
			}
			return nil
		})
	}
	release := memlimit.Lift()
	limitIs("the limit lifted", func(l int64) bool { return l == math.MaxInt64 })
	release()
	limitIs("the default limit back", func(l int64) bool { return l >= floor && l != math.MaxInt64 })
}
