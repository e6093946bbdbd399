// Package backendtest builds throwaway network namespaces for the backends'
// kernel tests and benchmarks: each namespace gets a per-run unique name and
// is deleted in Cleanup, and all work in it goes through a netlink handle
// bound to it or `ip -n`, so the calling thread never leaves its own
// namespace.
package backendtest

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/netagent/netagent/backend"
	"github.com/netagent/netagent/iface"
)

var seq atomic.Int64

// NS is a network namespace made for one test.
type NS struct {
	Name   string
	Netns  netns.NsHandle
	Handle *netlink.Handle
}

// RequireRoot skips tb unless it runs as root.
func RequireRoot(tb testing.TB) {
	tb.Helper()
	if os.Geteuid() != 0 {
		tb.Skip("needs root to create network namespaces")
	}
}

// NewNS creates a namespace named "nabk<pid>-<n>-<tag>" with lo up, and
// deletes it in tb.Cleanup.
func NewNS(tb testing.TB, tag string) *NS {
	tb.Helper()
	RequireRoot(tb)
	name := fmt.Sprintf("nabk%d-%d-%s", os.Getpid(), seq.Add(1), tag)
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		tb.Fatalf("ip netns add %s: %v: %s", name, err, out)
	}
	ns := &NS{Name: name}
	tb.Cleanup(func() {
		if ns.Handle != nil {
			ns.Handle.Close()
		}
		if ns.Netns.IsOpen() {
			ns.Netns.Close()
		}
		if out, err := exec.Command("ip", "netns", "del", name).CombinedOutput(); err != nil {
			tb.Errorf("ip netns del %s: %v: %s", name, err, out)
		}
	})
	h, err := netns.GetFromName(name)
	if err != nil {
		tb.Fatalf("open namespace %s: %v", name, err)
	}
	ns.Netns = h
	if ns.Handle, err = netlink.NewHandleAt(h); err != nil {
		tb.Fatalf("netlink handle in %s: %v", name, err)
	}
	ns.IP(tb, "link", "set", "lo", "up")
	return ns
}

// IP runs `ip -n <ns> args...` and returns its output.
func (ns *NS) IP(tb testing.TB, args ...string) string {
	tb.Helper()
	return ns.Cmd(tb, "ip", args...)
}

// Cmd runs `<prog> -n <ns> args...` (ip, bridge) and returns its output.
func (ns *NS) Cmd(tb testing.TB, prog string, args ...string) string {
	tb.Helper()
	out, err := exec.Command(prog, append([]string{"-n", ns.Name}, args...)...).CombinedOutput()
	if err != nil {
		tb.Fatalf("%s -n %s %s: %v: %s", prog, ns.Name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// Exec runs `ip netns exec <ns> args...` and returns its output.
func (ns *NS) Exec(tb testing.TB, args ...string) string {
	tb.Helper()
	out, err := exec.Command("ip", append([]string{"netns", "exec", ns.Name}, args...)...).CombinedOutput()
	if err != nil {
		tb.Fatalf("ip netns exec %s %s: %v: %s", ns.Name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// Veth joins a and b with a veth pair (aName in a, bName in b), both up.
func Veth(tb testing.TB, a *NS, aName string, b *NS, bName string) {
	tb.Helper()
	a.IP(tb, "link", "add", aName, "type", "veth", "peer", "name", bName, "netns", b.Name)
	a.IP(tb, "link", "set", aName, "up")
	b.IP(tb, "link", "set", bName, "up")
}

// Underlay creates two namespaces, a and b, joined by a veth pair with
// eth0 at both ends (see Veth): a host and its neighbour on one underlay
// link. Neither end has an address yet (see AddrAdd).
func Underlay(tb testing.TB) (a, b *NS) {
	tb.Helper()
	a, b = NewNS(tb, "a"), NewNS(tb, "b")
	Veth(tb, a, "eth0", b, "eth0")
	return a, b
}

// AddrAdd adds each of prefixes (like "192.168.77.1/24") to dev, IPv6
// ones without duplicate address detection so that they are usable at
// once. Equivalent to: `ip addr add PREFIX dev DEV [nodad]`.
func (ns *NS) AddrAdd(tb testing.TB, dev string, prefixes ...string) {
	tb.Helper()
	for _, p := range prefixes {
		args := []string{"addr", "add", p, "dev", dev}
		if netip.MustParsePrefix(p).Addr().Is6() {
			args = append(args, "nodad")
		}
		ns.IP(tb, args...)
	}
}

// Link returns the link called name in ns, and fails tb if there is none.
func (ns *NS) Link(tb testing.TB, name string) netlink.Link {
	tb.Helper()
	l, err := ns.Handle.LinkByName(name)
	if err != nil {
		tb.Fatalf("%s: link %s: %v", ns.Name, name, err)
	}
	return l
}

// Ext describes interface name in ns. Each of addrs (addresses of it, at
// most one per family) is both its address and public IP of that family:
// Addr and PublicIP for an IPv4 one, AddrV6 and PublicIPv6 for an IPv6 one.
func (ns *NS) Ext(tb testing.TB, name string, addrs ...netip.Addr) iface.External {
	tb.Helper()
	l := ns.Link(tb, name)
	ext := iface.External{Name: name, Index: l.Attrs().Index, MTU: l.Attrs().MTU}
	for _, a := range addrs {
		switch {
		case a.Is4():
			ext.Addr, ext.PublicIP = a, a
		case a.Is6():
			ext.AddrV6, ext.PublicIPv6 = a, a
		}
	}
	return ext
}

// OwnRoutes lists the routes of family (netlink.FAMILY_V4 or FAMILY_V6)
// that carry backend.RouteProtocol, the mark of the backends' own, sorted,
// each as "DST via GW dev NAME", with " onlink" after it when the route
// has that flag. Equivalent to: `ip -4|-6 route show proto 78`.
func OwnRoutes(h *netlink.Handle, family int) ([]string, error) {
	routes, err := h.RouteListFiltered(family, &netlink.Route{Protocol: backend.RouteProtocol}, netlink.RT_FILTER_PROTOCOL)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, r := range routes {
		l, err := h.LinkByIndex(r.LinkIndex)
		if err != nil {
			return nil, err
		}
		s := fmt.Sprintf("%s via %s dev %s", r.Dst, r.Gw, l.Attrs().Name)
		if r.Flags&int(netlink.FLAG_ONLINK) != 0 {
			s += " onlink"
		}
		out = append(out, s)
	}
	slices.Sort(out)
	return out, nil
}

// Start runs bk.Run in a goroutine until stop is called or tb's cleanup,
// whichever comes first, and fails tb if Run returns an error. Updates
// sent to updates go to Run.
func Start(tb testing.TB, bk backend.Backend) (updates chan<- backend.Update, stop func()) {
	tb.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	ch := make(chan backend.Update, 16)
	var wg sync.WaitGroup
	wg.Go(func() {
		if err := bk.Run(ctx, ch); err != nil {
			tb.Errorf("%s backend: Run: %v", bk.Type(), err)
		}
	})
	stop = sync.OnceFunc(func() { cancel(); wg.Wait() })
	tb.Cleanup(stop)
	return ch, stop
}

// Eventually polls cond every 10 ms until it returns nil or timeout passes,
// and fails tb with cond's last error then.
func Eventually(tb testing.TB, timeout time.Duration, cond func() error) {
	tb.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			tb.Fatalf("not within %s: %v", timeout, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// MustMAC parses a MAC or panics.
func MustMAC(s string) net.HardwareAddr {
	m, err := net.ParseMAC(s)
	if err != nil {
		panic(err)
	}
	return m
}
