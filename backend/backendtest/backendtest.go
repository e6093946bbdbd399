// Package backendtest builds throwaway network namespaces for the backends'
// kernel tests and benchmarks: each namespace gets a per-run unique name and
// is deleted in Cleanup, and all work in it goes through a netlink handle
// bound to it or `ip -n`, so the calling thread never leaves its own
// namespace.
package backendtest

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

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

// Ext describes interface name in ns, with addr (an address of it) as
// both its address and public IP.
func (ns *NS) Ext(tb testing.TB, name string, addr netip.Addr) iface.External {
	tb.Helper()
	l, err := ns.Handle.LinkByName(name)
	if err != nil {
		tb.Fatalf("%s: link %s: %v", ns.Name, name, err)
	}
	return iface.External{Name: name, Index: l.Attrs().Index, MTU: l.Attrs().MTU, Addr: addr, PublicIP: addr}
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
