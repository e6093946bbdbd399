package main

import (
	"math"
	"testing"

	"github.com/netagent/netagent/agent"
)

func TestMemoryLimitOptions(t *testing.T) {
	limit := func(want int64) func(t *testing.T, o *optsView) {
		return func(t *testing.T, o *optsView) { o.eq(t, "memory limit", o.MemoryLimit, want) }
	}
	runParseCases(t, []parseCase{
		{name: "default", check: limit(agent.DefaultMemoryLimit)},
		{name: "flag in MiB", args: []string{"--memory-limit=64MiB"}, check: limit(64 << 20)},
		{name: "flag in bytes", args: []string{"--memory-limit=40000000"}, check: limit(40000000)},
		{name: "off", args: []string{"--memory-limit=off"}, check: limit(math.MaxInt64)},
		{name: "environment", env: map[string]string{"NETAGENT_MEMORY_LIMIT": "1GiB"}, check: limit(1 << 30)},
		// The runtime has applied GOMEMLIMIT before main: it is kept.
		{name: "GOMEMLIMIT replaces the default", env: map[string]string{"GOMEMLIMIT": "100MiB"}, check: limit(0)},
		{name: "the flag wins over GOMEMLIMIT", args: []string{"--memory-limit=48MiB"},
			env: map[string]string{"GOMEMLIMIT": "100MiB"}, check: limit(48 << 20)},
	})
}

func TestFormatMemoryLimitRoundTrips(t *testing.T) {
	for _, n := range []int64{1, 1023, 1 << 10, 3 << 20, 24 << 20, 5 << 30, 1<<40 + 1, math.MaxInt64} {
		s := formatMemoryLimit(n)
		back, err := parseMemoryLimit(s)
		if err != nil || back != n {
			t.Errorf("formatMemoryLimit(%d) = %q, which parses as %d, %v", n, s, back, err)
		}
	}
}
