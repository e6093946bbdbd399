package test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/netagent/netagent/internal/lab"
	"github.com/netagent/netagent/lease"
)

const (
	dualVXLANConfig  = `{"Network":"10.5.0.0/16","EnableIPv6":true,"IPv6Network":"fc00:5::/48","Backend":{"Type":"vxlan"}}`
	dualHostGWConfig = `{"Network":"10.5.0.0/16","EnableIPv6":true,"IPv6Network":"fc00:5::/48","Backend":{"Type":"host-gw"}}`
	v6OnlyConfig     = `{"EnableIPv4":false,"EnableIPv6":true,"IPv6Network":"fc00:5::/48","Backend":{"Type":"vxlan"}}`
)

// addDualContainer is addContainer, checking that the container got one
// address per family of the host's lease, inside it.
func (c *cluster) addDualContainer(h *lab.Host) *container {
	c.t.Helper()
	d := c.addContainer(h)
	info := c.awaitSubnetFile(h)
	if info.Subnet.Contains(d.IP4) != info.Subnet.IsValid() || info.IPv6Subnet.Contains(d.IP6) != info.IPv6Subnet.IsValid() {
		c.t.Fatalf("%s: CNI gave %s and %s, want one address in each of %s %s", d.NS, d.IP4, d.IP6, info.Subnet, info.IPv6Subnet)
	}
	return d
}

// pingMatrixFamilies asserts that every container reaches every other
// over each family it has an address of.
func (c *cluster) pingMatrixFamilies(ctns []*container) {
	c.t.Helper()
	for _, a := range ctns {
		for _, b := range ctns {
			if a == b {
				continue
			}
			for _, dst := range []netip.Addr{b.IP4, b.IP6} {
				if !dst.IsValid() {
					continue
				}
				if err := c.ping(a.NS, dst, lab.PingOptions{Count: 2}); err != nil {
					c.t.Errorf("%s -> %s (%s): %v", a.NS, b.NS, dst, err)
				}
			}
		}
	}
}

// startDual starts one agent per host, waits for them, and attaches one
// container per host.
func (c *cluster) startDual() []*container {
	c.t.Helper()
	c.startAll()
	c.awaitReady()
	var ctns []*container
	for _, h := range c.hosts() {
		ctns = append(ctns, c.addDualContainer(h))
	}
	return ctns
}

// leases returns the lease values in etcd by key.
func (c *cluster) leases() map[string]lease.LeaseAttrs {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(c.ctx, 5*time.Second)
	defer cancel()
	resp, err := c.etcd.Get(ctx, prefix+"/subnets/", clientv3.WithPrefix())
	if err != nil {
		c.t.Fatal(err)
	}
	out := map[string]lease.LeaseAttrs{}
	for _, kv := range resp.Kvs {
		a, err := lease.ParseLeaseAttrs(kv.Value)
		if err != nil {
			c.t.Fatalf("lease %s: %v", kv.Key, err)
		}
		out[strings.TrimPrefix(string(kv.Key), prefix+"/subnets/")] = a
	}
	return out
}

// dfPing asserts that a DF ping of size bytes of payload from ns to dst
// passes, and one of size+1 does not.
func (c *cluster) dfPing(ns string, dst netip.Addr, size int) {
	c.t.Helper()
	if err := c.ping(ns, dst, lab.PingOptions{Count: 2, Size: size, DontFragment: true}); err != nil {
		c.t.Errorf("%s -> %s: DF ping of %d bytes: %v", ns, dst, size, err)
	}
	if err := c.ping(ns, dst, lab.PingOptions{Count: 1, Size: size + 1, DontFragment: true}); err == nil {
		c.t.Errorf("%s -> %s: DF ping of %d bytes passed", ns, dst, size+1)
	}
}

func TestDualStackVXLAN(t *testing.T) {
	t.Parallel()
	c := newCluster(t, clusterOptions{Hosts: 2, RoutedHosts: 1, IPv6: lab.DualStack, Config: dualVXLANConfig})
	ctns := c.startDual()
	h1 := c.hosts()[0]

	info := c.awaitSubnetFile(h1)
	if info.MTU != 1430 || !info.IPv6Subnet.IsValid() || info.IPv6Network.String() != "fc00:5::/48" {
		t.Errorf("subnet file %+v: want MTU 1430 (fits IPv4 and IPv6) and the IPv6 network and lease", info)
	}
	docker, err := os.ReadFile(filepath.Join(h1.Dir, "docker"))
	if err != nil || !strings.Contains(string(docker), "--ipv6 --fixed-cidr-v6="+info.IPv6Subnet.String()) {
		t.Errorf("docker options %q (%v): want --ipv6 --fixed-cidr-v6=%s", docker, err, info.IPv6Subnet)
	}
	// Every lease is dual stack, with the host's IPv6 VTEP.
	leases := c.leases()
	if len(leases) != 3 {
		t.Errorf("leases %v, want 3", leases)
	}
	for key, a := range leases {
		v4, v6, err := lease.ParseLeaseKey(key)
		if err != nil || !v4.IsValid() || !v6.IsValid() || !a.PublicIPv6.IsValid() || a.BackendV6Data == nil {
			t.Errorf("lease %s = %+v (%v): want both families and BackendV6Data", key, a, err)
		}
	}
	out := c.mustExec(h1.NS, "ip", "-d", "link", "show", "flannel-v6.1")
	if !strings.Contains(out, "mtu 1430") || !strings.Contains(out, "local "+h1.UnderlayV6.Addr().String()) {
		t.Errorf("flannel-v6.1 on h1:\n%s\nwant mtu 1430, local %s", out, h1.UnderlayV6.Addr())
	}

	// netagent status shows both devices and each peer once per family.
	var st struct {
		Backend struct {
			Device   string `json:"device"`
			DeviceV6 string `json:"device_v6"`
		} `json:"backend"`
		Peers []struct {
			Subnet   string `json:"subnet"`
			PublicIP string `json:"public_ip"`
		} `json:"peers"`
	}
	raw := c.mustExec(h1.NS, binaries(t)["./cmd/netagent"], "status", "--json", "--status-socket="+statusSocket(h1))
	if err := json.Unmarshal([]byte(raw), &st); err != nil {
		t.Fatalf("status %s: %v", raw, err)
	}
	v6Peers := 0
	for _, p := range st.Peers {
		if strings.Contains(p.Subnet, ":") && strings.HasPrefix(p.PublicIP, "fd") {
			v6Peers++
		}
	}
	if st.Backend.Device != "flannel.1" || st.Backend.DeviceV6 != "flannel-v6.1" || len(st.Peers) != 4 || v6Peers != 2 {
		t.Errorf("status: %s\nwant devices flannel.1 and flannel-v6.1, 2 peers per family", raw)
	}

	c.pingMatrixFamilies(ctns)
	// Container to container across hosts (h1 to the routed h3): the
	// container MTU is 1430; IPv6 takes 48 bytes of headers, IPv4 28.
	c.dfPing(ctns[0].NS, ctns[2].IP6, 1430-48)
	c.dfPing(ctns[0].NS, ctns[2].IP4, 1430-28)
	// From the host itself, through flannel-v6.1: its 1430-byte packets,
	// 1500 once encapsulated over IPv6, cross the 1500-byte underlay.
	c.dfPing(h1.NS, ctns[2].IP6, 1430-48)
}

func TestDualStackHostGW(t *testing.T) {
	t.Parallel()
	c := newCluster(t, clusterOptions{Hosts: 3, IPv6: lab.DualStack, Config: dualHostGWConfig})
	ctns := c.startDual()
	h1, h2 := c.hosts()[0], c.hosts()[1]
	out := c.mustExec(h1.NS, "ip", "-6", "route", "show", "proto", "78")
	lease2 := c.awaitSubnetFile(h2).IPv6Subnet
	if want := lease2.String() + " via " + h2.UnderlayV6.Addr().String() + " dev eth0"; !strings.Contains(out, want) {
		t.Errorf("h1 IPv6 routes:\n%s\nwant %q", out, want)
	}
	c.pingMatrixFamilies(ctns)
	// host-gw leaves the whole underlay MTU.
	c.dfPing(ctns[0].NS, ctns[1].IP6, 1500-48)
}

func TestIPv6OnlyOverlay(t *testing.T) {
	t.Parallel()
	c := newCluster(t, clusterOptions{Hosts: 2, RoutedHosts: 1, IPv6: lab.IPv6Only, Config: v6OnlyConfig})
	ctns := c.startDual()
	for _, ctn := range ctns {
		if ctn.IP4.IsValid() || !ctn.IP6.IsValid() {
			t.Errorf("%s: addresses %s %s, want IPv6 only", ctn.NS, ctn.IP4, ctn.IP6)
		}
	}
	for key := range c.leases() {
		if v4, v6, err := lease.ParseLeaseKey(key); err != nil || v4.IsValid() || !v6.IsValid() {
			t.Errorf("lease key %s: want IPv6 only", key)
		}
	}
	if _, err := c.exec(c.hosts()[0].NS, "ip", "link", "show", "flannel.1"); err == nil {
		t.Error("flannel.1 exists on an IPv6-only overlay")
	}
	c.pingMatrixFamilies(ctns)
	c.dfPing(ctns[0].NS, ctns[2].IP6, 1430-48)
}

// countSourcesV6 is countSources for ICMPv6 echo requests.
func (c *cluster) countSourcesV6(ns string, srcs ...string) func() map[string]int {
	c.t.Helper()
	c.mustExec(ns, "nft", "add table ip6 natest")
	c.mustExec(ns, "nft", "add chain ip6 natest in { type filter hook input priority 0 ; }")
	for _, s := range srcs {
		c.mustExec(ns, "nft", fmt.Sprintf("add rule ip6 natest in ip6 saddr %s icmpv6 type echo-request counter", s))
	}
	re := regexp.MustCompile(`ip6 saddr (\S+) icmpv6 type echo-request counter packets (\d+)`)
	return func() map[string]int {
		c.t.Helper()
		got := map[string]int{}
		for _, m := range re.FindAllStringSubmatch(c.mustExec(ns, "nft", "list chain ip6 natest in"), -1) {
			n, _ := strconv.Atoi(m[2])
			got[m[1]] = n
		}
		return got
	}
}

// TestIPv6Masquerade: container → another host's underlay IPv6 address
// leaves with the sending host's address; container → container keeps
// the container's.
func TestIPv6Masquerade(t *testing.T) {
	t.Parallel()
	c := newCluster(t, clusterOptions{Hosts: 2, IPv6: lab.DualStack, Config: dualVXLANConfig})
	ctns := c.startDual()
	h1, h2 := c.hosts()[0], c.hosts()[1]
	c1, c2 := ctns[0], ctns[1]
	h1Addr := h1.UnderlayV6.Addr().String()

	atHost := c.countSourcesV6(h2.NS, h1Addr, c1.IP6.String())
	if err := c.ping(c1.NS, h2.UnderlayV6.Addr(), lab.PingOptions{Count: 3}); err != nil {
		t.Fatalf("container -> other host's underlay IPv6 address: %v", err)
	}
	if got := atHost(); got[h1Addr] < 3 || got[c1.IP6.String()] != 0 {
		t.Errorf("at %s, echo requests by source = %v: want 3 from %s (masqueraded), none from %s", h2.Name, got, h1Addr, c1.IP6)
	}

	atCtn := c.countSourcesV6(c2.NS, h1Addr, c1.IP6.String())
	if err := c.ping(c1.NS, c2.IP6, lab.PingOptions{Count: 3}); err != nil {
		t.Fatalf("container -> container over IPv6: %v", err)
	}
	if got := atCtn(); got[c1.IP6.String()] < 3 || got[h1Addr] != 0 {
		t.Errorf("at %s, echo requests by source = %v: want 3 from %s (not masqueraded)", c2.NS, got, c1.IP6)
	}
}
