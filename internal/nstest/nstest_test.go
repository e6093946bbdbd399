package nstest

import (
	"os"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

func TestNewNSIsOwnAndRemoved(t *testing.T) {
	var n *NS
	t.Run("use", func(t *testing.T) {
		n = NewNS(t, "kit")
		if _, err := os.Stat(n.Path()); err != nil {
			t.Fatalf("namespace file: %v", err)
		}
		own, err := netns.Get()
		if err != nil {
			t.Fatal(err)
		}
		defer own.Close()
		if n.Netns.Equal(own) {
			t.Fatal("NewNS returned the test's own namespace")
		}
		if lo := n.Link(t, "lo"); lo.Attrs().OperState.String() == "down" {
			t.Errorf("lo is down")
		}
		// The same namespace through each way in: a link made with ip -n
		// is seen by the handle, by ip netns exec, and from Do.
		n.IP(t, "link", "add", "kit0", "type", "veth", "peer", "name", "kit1")
		n.Link(t, "kit0")
		if out := n.Exec(t, "ip", "-o", "link", "show", "kit1"); !strings.Contains(out, "kit1") {
			t.Errorf("ip netns exec: %q", out)
		}
		if err := n.Do(func() error {
			_, err := netlink.LinkByName("kit0") // this thread is in n
			return err
		}); err != nil {
			t.Errorf("Do: %v", err)
		}
		if _, err := n.Try("false"); err == nil {
			t.Error("Try of a failing command returned no error")
		}
	})
	if _, err := os.Stat(n.Path()); !os.IsNotExist(err) {
		t.Errorf("namespace %s still there after the test: %v", n.Name, err)
	}
}

func TestUnderlay(t *testing.T) {
	a, b := Underlay(t)
	a.AddrAdd(t, "eth0", "192.168.77.1/24", "fd77::1/64")
	b.AddrAdd(t, "eth0", "192.168.77.2/24")
	a.Exec(t, "ping", "-c", "1", "-W", "5", "192.168.77.2")
	if out := a.IP(t, "-6", "addr", "show", "dev", "eth0"); !strings.Contains(out, "fd77::1/64") {
		t.Errorf("eth0 of a: %s", out)
	}
}
