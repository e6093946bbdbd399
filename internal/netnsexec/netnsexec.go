// Package netnsexec runs a function on a thread switched into a network
// namespace, for what must be created there: sockets, TUN devices,
// generic netlink clients.
package netnsexec

import (
	"fmt"
	"runtime"

	"github.com/vishvananda/netns"
)

// Do runs fn on a thread switched into ns, or on the calling goroutine
// when ns is not open (0 or netns.None(): the caller's namespace). A socket
// or device keeps the namespace it was created in, so fn creates and
// returns; the thread is switched back afterwards, or discarded when it
// cannot be.
func Do(ns netns.NsHandle, fn func() error) error {
	if ns == 0 || !ns.IsOpen() {
		return fn()
	}
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("netnsexec: current network namespace: %w", err)
			return
		}
		defer orig.Close()
		if err := netns.Set(ns); err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("netnsexec: enter network namespace: %w", err)
			return
		}
		ferr := fn()
		if err := netns.Set(orig); err != nil {
			// Leave the thread locked: the runtime ends it with the
			// goroutine instead of reusing it in the wrong namespace.
			errc <- fmt.Errorf("netnsexec: leave network namespace: %w", err)
			return
		}
		runtime.UnlockOSThread()
		errc <- ferr
	}()
	return <-errc
}
