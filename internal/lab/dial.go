package lab

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"runtime"

	"github.com/vishvananda/netns"
)

// DialInNS connects to addr (an IP literal and port: names are refused) from inside the named
// network namespace ns, so that a process living in the initial namespace
// can talk to a topology address without a packet ever leaving from the
// initial namespace: a socket stays in the namespace it was created in.
// It refuses ns if it is the initial namespace or the caller's own.
//
// The socket is created and connected on a goroutine locked to its OS
// thread, switched into ns and back; if switching back fails, the thread is
// left locked and so discarded by the runtime, never reused.
func DialInNS(ctx context.Context, ns, network, addr string) (net.Conn, error) {
	// A name would be resolved by a goroutine on another thread, in the
	// caller's namespace: accept only IP literals.
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, fmt.Errorf("lab: dial %s: %w", addr, err)
	}
	if _, err := netip.ParseAddr(host); err != nil {
		return nil, fmt.Errorf("lab: dial %s: host is not an IP address", addr)
	}
	if err := checkNotInitial(NSPath(ns)); err != nil {
		return nil, err
	}
	target, err := netns.GetFromPath(NSPath(ns))
	if err != nil {
		return nil, fmt.Errorf("lab: open namespace %s: %w", ns, err)
	}
	defer target.Close()

	type result struct {
		conn net.Conn
		err  error
	}
	ch := make(chan result, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			runtime.UnlockOSThread()
			ch <- result{err: fmt.Errorf("lab: current namespace: %w", err)}
			return
		}
		defer orig.Close()
		if err := netns.Set(target); err != nil {
			runtime.UnlockOSThread()
			ch <- result{err: fmt.Errorf("lab: enter namespace %s: %w", ns, err)}
			return
		}
		var d net.Dialer
		conn, dialErr := d.DialContext(ctx, network, addr)
		if err := netns.Set(orig); err != nil {
			// Leave the thread locked: the runtime ends it with this
			// goroutine instead of running other code in ns.
			if conn != nil {
				conn.Close()
			}
			ch <- result{err: fmt.Errorf("lab: leave namespace %s: %w", ns, err)}
			return
		}
		runtime.UnlockOSThread()
		if dialErr != nil {
			dialErr = fmt.Errorf("lab: dial %s %s in %s: %w", network, addr, ns, dialErr)
		}
		ch <- result{conn, dialErr}
	}()
	r := <-ch
	return r.conn, r.err
}

// HTTPClientInNS returns an HTTP client whose connections are made inside
// the named namespace ns (see DialInNS). It uses no proxy. URLs must name
// hosts by IP address: names are not resolved inside ns.
func HTTPClientInNS(ns string) *http.Client {
	return &http.Client{Transport: &http.Transport{
		Proxy: nil,
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			return DialInNS(ctx, ns, network, addr)
		},
		DisableKeepAlives: true,
	}}
}
