// Package memlimit lets a part of the agent lift the process's default Go
// memory limit while it runs. The default (netagent run's
// --memory-limit, when not given) holds the heap near what is live; that
// suits the agent's own tables, but not a packet path that allocates and
// pools its buffers, such as userspace WireGuard: with the limit, the
// collector runs often, empties those pools each time, and every batch
// allocates and faults its buffers again (one TCP stream through the
// tunnel: 0.12 instead of 1.19 Gbit/s). A limit the user gave is not
// lifted: the owner of the limit decides what Lifted means to it.
package memlimit

import "sync"

var (
	mu      sync.Mutex
	lifts   int
	changed = make(chan struct{}, 1)
)

// Lift asks for the default limit to be lifted until release is called
// (once; later calls do nothing).
func Lift() (release func()) {
	mu.Lock()
	lifts++
	mu.Unlock()
	notify()
	var once sync.Once
	return func() {
		once.Do(func() {
			mu.Lock()
			lifts--
			mu.Unlock()
			notify()
		})
	}
}

// Lifted reports whether a part of the agent has asked for the default
// limit to be lifted.
func Lifted() bool {
	mu.Lock()
	defer mu.Unlock()
	return lifts > 0
}

// Changed receives a value after Lifted may have changed.
func Changed() <-chan struct{} { return changed }

func notify() {
	select {
	case changed <- struct{}{}:
	default:
	}
}
