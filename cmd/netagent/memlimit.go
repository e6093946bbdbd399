package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"runtime/debug"
	"runtime/metrics"
	"strconv"
	"strings"
	"time"

	"github.com/netagent/netagent/internal/memlimit"
)

// The agent's memory limit (--memory-limit, NETAGENT_MEMORY_LIMIT): the Go
// runtime's soft limit on the memory it manages (heap, stacks, its own
// metadata; not the binary's mapped pages). Without one the collector lets
// the heap grow to twice what is live before it runs; with one it runs
// earlier as the process nears the limit, and returns freed memory to the
// kernel to stay under it. A limit below what is live makes the collector
// run continuously, capped by the runtime at about half the CPU, and the
// memory still grows past it: the default (agent.DefaultMemoryLimit) is
// set above what the agent holds with 5,000 peers, and follows the live
// heap up in a larger cluster (keepMemoryLimit). GOMEMLIMIT in the
// environment, when the flag is not given, is the runtime's own, read
// before main, and is kept.

// memLimitUnits are the suffixes a limit may carry, as GOMEMLIMIT's.
var memLimitUnits = []struct {
	suffix string
	mult   int64
}{{"TiB", 1 << 40}, {"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}, {"B", 1}}

// memoryLimit is the --memory-limit flag: a size in GOMEMLIMIT's syntax
// (24MiB, 33554432, 1GiB) or "off" for no limit at all.
type memoryLimit struct{ bytes *int64 }

func (m memoryLimit) String() string {
	if m.bytes == nil {
		return ""
	}
	return formatMemoryLimit(*m.bytes)
}

func (m memoryLimit) Set(v string) error {
	n, err := parseMemoryLimit(v)
	if err != nil {
		return err
	}
	*m.bytes = n
	return nil
}

// parseMemoryLimit reads a limit in GOMEMLIMIT's syntax; "off" is no limit
// (math.MaxInt64).
func parseMemoryLimit(v string) (int64, error) {
	if v == "off" {
		return math.MaxInt64, nil
	}
	num, mult := v, int64(1)
	for _, u := range memLimitUnits {
		if rest, ok := strings.CutSuffix(v, u.suffix); ok {
			num, mult = rest, u.mult
			break
		}
	}
	n, err := strconv.ParseInt(num, 10, 64)
	switch {
	case err != nil:
		return 0, fmt.Errorf("%q is not a size such as 32MiB or off", v)
	case n <= 0:
		return 0, errors.New("must be positive (off: no limit)")
	case n > math.MaxInt64/mult:
		return 0, fmt.Errorf("%q is too large", v)
	}
	return n * mult, nil
}

// formatMemoryLimit is the reverse of parseMemoryLimit, in the largest unit
// that divides n.
func formatMemoryLimit(n int64) string {
	if n == math.MaxInt64 {
		return "off"
	}
	for _, u := range memLimitUnits {
		if n != 0 && n%u.mult == 0 {
			return strconv.FormatInt(n/u.mult, 10) + u.suffix
		}
	}
	return strconv.FormatInt(n, 10)
}

// applyMemoryLimit sets the process's memory limit to limit, unless it is
// 0 (GOMEMLIMIT's, or none, stays), and logs the limit in force. With
// floor (the default limit) keepMemoryLimit, run until ctx is done, raises
// it with the live heap of a larger cluster; a limit given is kept as
// given.
func applyMemoryLimit(ctx context.Context, log *slog.Logger, limit int64, floor bool) {
	from := "netagent"
	if limit > 0 {
		debug.SetMemoryLimit(limit)
	} else {
		from = "GOMEMLIMIT"
	}
	log.Info("Go memory limit", "limit", formatMemoryLimit(debug.SetMemoryLimit(-1)), "set_by", from)
	if limit > 0 && floor {
		go keepMemoryLimit(ctx, log, limit)
	}
}

// memoryLimitCheck is how often keepMemoryLimit looks at the live heap.
const memoryLimitCheck = 10 * time.Second

// keepMemoryLimit sets the memory limit to memoryLimitFor(floor, the live
// heap) every memoryLimitCheck until ctx is done, and lifts it (no limit)
// while a part of the agent asks so (internal/memlimit: userspace
// WireGuard's packet buffers).
func keepMemoryLimit(ctx context.Context, log *slog.Logger, floor int64) {
	sample := []metrics.Sample{{Name: "/gc/heap/live:bytes"}}
	t := time.NewTicker(memoryLimitCheck)
	defer t.Stop()
	last := floor
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-memlimit.Changed():
		}
		next := int64(math.MaxInt64)
		if !memlimit.Lifted() {
			metrics.Read(sample)
			if sample[0].Value.Kind() != metrics.KindUint64 {
				return
			}
			next = memoryLimitFor(floor, int64(sample[0].Value.Uint64()))
		}
		if next == last {
			continue
		}
		debug.SetMemoryLimit(next)
		switch {
		case next == math.MaxInt64:
			log.Info("Go memory limit lifted while userspace WireGuard runs: its packet buffers need the room", "limit", formatMemoryLimit(next))
		case last == math.MaxInt64:
			log.Info("Go memory limit back", "limit", formatMemoryLimit(next))
		default:
			log.Debug("Go memory limit follows the live heap", "limit", formatMemoryLimit(next), "live_heap", sample[0].Value.Uint64())
		}
		last = next
	}
}

// memoryLimitFor is the default limit for a live heap of live bytes: the
// floor, or 1.5 times the live heap and 8 MiB when that is more. The limit
// counts the runtime's stacks and metadata too (~7 MiB with 5,000 peers):
// a limit near the live heap plus those makes the collector run
// continuously, and one that leaves half the live heap free on top runs it
// about as often as GOGC=50 does, so that a cluster larger than the floor
// was set for costs memory, not CPU. Rounded up to MiB, so that small
// changes of the live heap do not move it.
func memoryLimitFor(floor, live int64) int64 {
	const mib = 1 << 20
	want := (live + live/2 + memoryLimitOverhead + mib - 1) &^ (mib - 1)
	return max(floor, want)
}

// memoryLimitOverhead is what memoryLimitFor allows for the runtime's
// memory outside the heap.
const memoryLimitOverhead = 8 << 20
