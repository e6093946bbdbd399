package lab

import (
	"errors"
	"net/netip"
	"strings"
	"testing"
	"time"
)

func TestContainers(t *testing.T) {
	t.Parallel()
	l := newLab(t, Options{Hosts: 1})
	ctx := testCtx(t, 30*time.Second)
	h := l.Hosts()[0]
	subnet := netip.MustParsePrefix("10.5.58.0/24")
	const mtu = 1450
	c1, err := l.AttachContainer(ctx, h, "c1", subnet, mtu)
	if err != nil {
		t.Fatal(err)
	}
	c2, err := l.AttachContainer(ctx, h, "c2", subnet, mtu)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		c    *Container
		want string
	}{{c1, "10.5.58.2/24"}, {c2, "10.5.58.3/24"}} {
		if tc.c.Addr.String() != tc.want || tc.c.Gateway.String() != "10.5.58.1" {
			t.Errorf("%s: addr %s gw %s, want %s via 10.5.58.1", tc.c.Name, tc.c.Addr, tc.c.Gateway, tc.want)
		}
		out, err := l.Exec(ctx, tc.c.NS, "ip", "-o", "addr", "show", "dev", "eth0")
		if err != nil || !strings.Contains(string(out), tc.want) {
			t.Errorf("%s: eth0 %q, %v; want %s", tc.c.Name, out, err, tc.want)
		}
		out, err = l.Exec(ctx, tc.c.NS, "ip", "-o", "link", "show", "dev", "eth0")
		if err != nil || !strings.Contains(string(out), "mtu 1450") {
			t.Errorf("%s: eth0 %q, %v; want mtu 1450", tc.c.Name, out, err)
		}
	}
	if _, err := l.Ping(ctx, c1.NS, c2.Addr.Addr(), PingOptions{Count: 2}); err != nil {
		t.Errorf("c1 -> c2: %v", err)
	}
	if _, err := l.Ping(ctx, c2.NS, c1.Gateway, PingOptions{Count: 2}); err != nil {
		t.Errorf("c2 -> cni0: %v", err)
	}
	// The container MTU holds: 1422 = 1450 - 28 bytes of headers.
	if _, err := l.Ping(ctx, c1.NS, c2.Addr.Addr(), PingOptions{Count: 1, Size: 1422, DontFragment: true}); err != nil {
		t.Errorf("1422-byte ping with DF: %v", err)
	}
	if _, err := l.Ping(ctx, c1.NS, c2.Addr.Addr(), PingOptions{Count: 1, Size: 1423, DontFragment: true}); err == nil {
		t.Error("1423-byte ping with DF passed a 1450 MTU")
	}

	// Failures leave nothing behind.
	nsBefore := len(l.Namespaces())
	if _, err := l.AttachContainer(ctx, h, "c1", subnet, mtu); err == nil {
		t.Error("second container c1 attached")
	}
	if _, err := l.AttachContainer(ctx, h, "c3", netip.MustParsePrefix("10.5.59.0/24"), mtu); !errors.Is(err, ErrBridgeSubnet) {
		t.Errorf("attach on another subnet = %v, want ErrBridgeSubnet", err)
	}
	if _, err := l.AttachContainer(ctx, h, "Bad-Name", subnet, mtu); err == nil {
		t.Error("invalid container name accepted")
	}
	if n := len(l.Namespaces()); n != nsBefore {
		t.Errorf("%d namespaces after failed attaches, want %d", n, nsBefore)
	}

	// A bare namespace for a CNI plugin: only lo.
	bare, err := l.AddContainerNS(ctx, h, "bare")
	if err != nil {
		t.Fatal(err)
	}
	out, err := l.Exec(ctx, bare.NS, "ip", "-o", "link", "show")
	if err != nil || strings.Count(strings.TrimSpace(string(out)), "\n") != 0 || !strings.Contains(string(out), "lo:") {
		t.Errorf("bare container links %q, %v; want lo only", out, err)
	}
	if got := len(l.Containers(h)); got != 3 {
		t.Errorf("Containers = %d, want 3", got)
	}

	if err := l.RemoveContainer(ctx, c2); err != nil {
		t.Fatal(err)
	}
	if _, err := l.Exec(ctx, h.NS, "ip", "link", "show", "vethc2"); err == nil {
		t.Error("vethc2 still on the host after RemoveContainer")
	}
	if _, err := l.Ping(ctx, c1.NS, c2.Addr.Addr(), PingOptions{Count: 1}); err == nil {
		t.Error("c2 still answers after RemoveContainer")
	}
	// Its address is not reused.
	c4, err := l.AttachContainer(ctx, h, "c4", subnet, mtu)
	if err != nil {
		t.Fatal(err)
	}
	if c4.Addr.String() != "10.5.58.4/24" {
		t.Errorf("c4 got %s, want 10.5.58.4/24", c4.Addr)
	}
}
