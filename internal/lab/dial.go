package lab

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os/exec"
	"runtime"

	"github.com/vishvananda/netns"
)

// DialInNS connects to addr (an IP literal and port: names are refused) from inside the named
// network namespace ns, so that a process living in the initial namespace
// can talk to a topology address without a packet ever leaving from the
// initial namespace: a socket stays in the namespace it was created in.
// It refuses ns if it is the initial namespace or the caller's own.
//
// The socket is created and connected on a thread switched into ns and
// back (doInNS).
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
	var conn net.Conn
	err = doInNS(ns, func() error {
		var d net.Dialer
		c, err := d.DialContext(ctx, network, addr)
		if err != nil {
			return fmt.Errorf("lab: dial %s %s in %s: %w", network, addr, ns, err)
		}
		conn = c
		return nil
	}, func() {
		if conn != nil {
			conn.Close()
		}
	})
	if err != nil {
		return nil, err
	}
	return conn, nil
}

// startInNS starts cmd from a thread switched into the network namespace
// ns: the child is forked from that thread and so born in ns.
func startInNS(ns string, cmd *exec.Cmd) error {
	if err := checkNotInitial(NSPath(ns)); err != nil {
		return err
	}
	return doInNS(ns, cmd.Start, func() {
		if cmd.Process != nil {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
		}
	})
}

// doInNS runs f on a goroutine locked to its OS thread, switched into the
// network namespace ns and back. If switching back fails, undo is called
// to discard what f made, and the thread is left locked and so discarded
// by the runtime, never reused.
func doInNS(ns string, f func() error, undo func()) error {
	target, err := netns.GetFromPath(NSPath(ns))
	if err != nil {
		return fmt.Errorf("lab: open namespace %s: %w", ns, err)
	}
	defer target.Close()
	ch := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			runtime.UnlockOSThread()
			ch <- fmt.Errorf("lab: current namespace: %w", err)
			return
		}
		defer orig.Close()
		if err := netns.Set(target); err != nil {
			runtime.UnlockOSThread()
			ch <- fmt.Errorf("lab: enter namespace %s: %w", ns, err)
			return
		}
		fErr := f()
		if err := netns.Set(orig); err != nil {
			// Leave the thread locked: the runtime ends it with this
			// goroutine instead of running other code in ns.
			undo()
			ch <- fmt.Errorf("lab: leave namespace %s: %w", ns, err)
			return
		}
		runtime.UnlockOSThread()
		ch <- fErr
	}()
	return <-ch
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
