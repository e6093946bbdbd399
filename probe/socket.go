package probe

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"runtime"
	"syscall"

	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// inNetns runs fn on a thread switched into ns, or on the calling goroutine
// when ns is not open (0 or netns.None(): the caller's namespace). A socket
// keeps the namespace it was created in, so fn creates sockets and returns;
// the thread is switched back afterwards, or discarded when it cannot be.
func inNetns(ns netns.NsHandle, fn func() error) error {
	if ns == 0 || !ns.IsOpen() {
		return fn()
	}
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("probe: current network namespace: %w", err)
			return
		}
		defer orig.Close()
		if err := netns.Set(ns); err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("probe: enter network namespace: %w", err)
			return
		}
		ferr := fn()
		if err := netns.Set(orig); err != nil {
			// Leave the thread locked: the runtime ends it with the
			// goroutine instead of reusing it in the wrong namespace.
			errc <- fmt.Errorf("probe: leave network namespace: %w", err)
			return
		}
		runtime.UnlockOSThread()
		errc <- ferr
	}()
	return <-errc
}

// listenUDP opens a UDP socket bound to addr:port. It sets
// IP_MTU_DISCOVER=IP_PMTUDISC_DO, so every datagram leaves with DF set and
// one larger than the route's MTU fails with EMSGSIZE instead of being
// fragmented, and IP_FREEBIND, so the address need not be configured yet
// (the backend adds the overlay address asynchronously).
//
// Equivalent to: `socket(AF_INET, SOCK_DGRAM)`, setsockopt IP_MTU_DISCOVER
// and IP_FREEBIND, `bind(addr:port)`.
func listenUDP(addr netip.Addr, port int) (*net.UDPConn, error) {
	lc := net.ListenConfig{Control: func(_, _ string, c syscall.RawConn) error {
		var serr error
		err := c.Control(func(fd uintptr) {
			serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_IP, unix.IP_MTU_DISCOVER, unix.IP_PMTUDISC_DO)
			if serr == nil {
				serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_IP, unix.IP_FREEBIND, 1)
			}
		})
		if err != nil {
			return err
		}
		return serr
	}}
	bind := "0.0.0.0"
	if addr.IsValid() {
		bind = addr.String()
	}
	c, err := lc.ListenPacket(context.Background(), "udp4", net.JoinHostPort(bind, fmt.Sprint(port)))
	if err != nil {
		return nil, fmt.Errorf("probe: listen udp %s:%d: %w", bind, port, err)
	}
	return c.(*net.UDPConn), nil
}

// listenUDPIn is listenUDP in namespace ns (see inNetns).
func listenUDPIn(ns netns.NsHandle, addr netip.Addr, port int) (*net.UDPConn, error) {
	var c *net.UDPConn
	err := inNetns(ns, func() error {
		var err error
		c, err = listenUDP(addr, port)
		return err
	})
	return c, err
}
