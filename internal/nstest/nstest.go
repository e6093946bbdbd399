// Package nstest builds throwaway network namespaces for kernel tests and
// benchmarks: each namespace gets a per-run unique name and is deleted in
// Cleanup, and work in it goes through a netlink handle bound to it, `ip -n`,
// `ip netns exec`, or Do on a thread that enters it, so the test's own
// threads never leave their namespace.
//
// It imports no package of netagent, so that every package's tests can use
// it.
package nstest

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
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

// NewNS creates a namespace named "nans<pid>-<n>-<tag>" with lo up, and
// deletes it in tb.Cleanup. It skips tb unless it runs as root.
//
// Equivalent to: `ip netns add NAME; ip -n NAME link set lo up`.
func NewNS(tb testing.TB, tag string) *NS {
	tb.Helper()
	RequireRoot(tb)
	name := fmt.Sprintf("nans%d-%d-%s", os.Getpid(), seq.Add(1), tag)
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		tb.Fatalf("ip netns add %s: %v: %s", name, err, out)
	}
	n := &NS{Name: name}
	tb.Cleanup(func() {
		if n.Handle != nil {
			n.Handle.Close()
		}
		if n.Netns.IsOpen() {
			n.Netns.Close()
		}
		if out, err := exec.Command("ip", "netns", "del", name).CombinedOutput(); err != nil {
			tb.Errorf("ip netns del %s: %v: %s", name, err, out)
		}
	})
	h, err := netns.GetFromName(name)
	if err != nil {
		tb.Fatalf("open namespace %s: %v", name, err)
	}
	n.Netns = h
	if n.Handle, err = netlink.NewHandleAt(h); err != nil {
		tb.Fatalf("netlink handle in %s: %v", name, err)
	}
	n.IP(tb, "link", "set", "lo", "up")
	return n
}

// Path is the namespace's file, /run/netns/<name>, for what takes a
// namespace by path (CNI_NETNS, ns.GetNS).
func (n *NS) Path() string { return "/run/netns/" + n.Name }

// Do runs f on a thread inside the namespace and returns its error; what f
// starts (commands, sockets) lives in the namespace. The calling goroutine
// stays where it is, so Do is safe in any goroutine.
func (n *NS) Do(f func() error) error {
	return ns.WithNetNSPath(n.Path(), func(ns.NetNS) error { return f() })
}

// IP runs `ip -n <ns> args...` and returns its output.
func (n *NS) IP(tb testing.TB, args ...string) string {
	tb.Helper()
	return n.Cmd(tb, "ip", args...)
}

// Cmd runs `<prog> -n <ns> args...` (ip, bridge) and returns its output.
func (n *NS) Cmd(tb testing.TB, prog string, args ...string) string {
	tb.Helper()
	out, err := exec.Command(prog, append([]string{"-n", n.Name}, args...)...).CombinedOutput()
	if err != nil {
		tb.Fatalf("%s -n %s %s: %v: %s", prog, n.Name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// Exec runs `ip netns exec <ns> args...`, fails tb when it fails, and
// returns its output.
func (n *NS) Exec(tb testing.TB, args ...string) string {
	tb.Helper()
	out, err := n.Try(args...)
	if err != nil {
		tb.Fatalf("ip netns exec %s %s: %v: %s", n.Name, strings.Join(args, " "), err, out)
	}
	return out
}

// Try runs `ip netns exec <ns> args...` and returns its output and error.
func (n *NS) Try(args ...string) (string, error) {
	out, err := exec.Command("ip", append([]string{"netns", "exec", n.Name}, args...)...).CombinedOutput()
	return string(out), err
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
func (n *NS) AddrAdd(tb testing.TB, dev string, prefixes ...string) {
	tb.Helper()
	for _, p := range prefixes {
		args := []string{"addr", "add", p, "dev", dev}
		if netip.MustParsePrefix(p).Addr().Is6() {
			args = append(args, "nodad")
		}
		n.IP(tb, args...)
	}
}

// Link returns the link called name in n, and fails tb if there is none.
func (n *NS) Link(tb testing.TB, name string) netlink.Link {
	tb.Helper()
	l, err := n.Handle.LinkByName(name)
	if err != nil {
		tb.Fatalf("%s: link %s: %v", n.Name, name, err)
	}
	return l
}

// MustMAC parses a MAC or panics.
func MustMAC(s string) net.HardwareAddr {
	m, err := net.ParseMAC(s)
	if err != nil {
		panic(err)
	}
	return m
}
