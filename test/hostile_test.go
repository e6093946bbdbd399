package test

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/netagent/netagent/lease"
)

// TestHostileLeases: leases that no honest agent writes are refused with a
// warning that names them, and nothing is programmed for them on any host,
// while the honest peers keep being served. A legitimate lease written
// after them shows the watch went past them.
func TestHostileLeases(t *testing.T) {
	t.Parallel()
	// vxlanConfig keeps the hosts' leases below the hostile keys.
	c := newCluster(t, clusterOptions{Hosts: 2, Config: vxlanConfig})
	infos := c.startAll()
	c.awaitReady()
	h1, h2 := c.hosts()[0], c.hosts()[1]
	own1 := infos[h1.Name].Subnet
	half := netip.PrefixFrom(netip.AddrFrom4([4]byte{own1.Addr().As4()[0], own1.Addr().As4()[1], own1.Addr().As4()[2], 128}), 25)

	ok := func(pub, mac string) string {
		return fmt.Sprintf(`{"PublicIP":%q,"PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":%q}}`, pub, mac)
	}
	hostile := []struct {
		name, key, value string
		// warning is what the warning on h1 says, next to the key;
		// warningOthers what other hosts' say, when it differs.
		warning, warningOthers string
		// onlyH1: only h1 refuses it (it is about h1's own subnet or IP).
		onlyH1 bool
	}{
		{"key outside the network", "10.99.1.0-24", ok("192.168.77.201", "0a:00:00:00:01:01"), "ignoring lease outside the network", "", false},
		// Half of h1's subnet: h2 would route part of h1's containers
		// to 192.168.77.202.
		{"subnet inside ours", lease.LeaseKey(half, netip.Prefix{}), ok("192.168.77.202", "0a:00:00:00:01:02"),
			"ignoring lease overlapping this host's subnet", "ignoring lease of another size than the network's subnets", false},
		{"subnet of another size", "10.5.212.0-23", ok("192.168.77.213", "0a:00:00:00:01:0d"), "ignoring lease of another size than the network's subnets", "", false},
		{"PublicIP ours", "10.5.201.0-24", ok(h1.Underlay.Addr().String(), "0a:00:00:00:01:03"), "ignoring lease with this host's public IP", "", true},
		{"VtepMAC zero", "10.5.202.0-24", ok("192.168.77.204", "00:00:00:00:00:00"), "ignoring lease with malformed BackendData", "", false},
		{"VtepMAC multicast", "10.5.203.0-24", ok("192.168.77.205", "01:00:5e:00:00:01"), "ignoring lease with malformed BackendData", "", false},
		{"VtepMAC broadcast", "10.5.204.0-24", ok("192.168.77.206", "ff:ff:ff:ff:ff:ff"), "ignoring lease with malformed BackendData", "", false},
		{"PublicIP loopback", "10.5.205.0-24", ok("127.0.0.1", "0a:00:00:00:01:07"), "skipping lease with malformed value", "", false},
		{"PublicIP multicast", "10.5.206.0-24", ok("224.0.0.1", "0a:00:00:00:01:08"), "skipping lease with malformed value", "", false},
		{"PublicIP unspecified", "10.5.207.0-24", ok("0.0.0.0", "0a:00:00:00:01:09"), "skipping lease with malformed value", "", false},
		{"oversized value", "10.5.208.0-24", strings.Replace(ok("192.168.77.210", "0a:00:00:00:01:0a"), `"VNI":1`, `"VNI":1,"Pad":"`+strings.Repeat("x", lease.MaxLeaseValueSize)+`"`, 1), "skipping lease with malformed value", "", false},
		{"non-UTF-8 value", "10.5.209.0-24", strings.Replace(ok("192.168.77.211", "0a:00:00:00:01:0b"), `"VNI":1`, "\"X\":\"\xff\xfe\",\"VNI\":1", 1), "skipping lease with malformed value", "", false},
		{"malformed key", "10.5.210.7-24", ok("192.168.77.212", "0a:00:00:00:01:0c"), "skipping malformed lease key", "", false},
	}
	marks := map[string]logMark{}
	for _, h := range c.hosts() {
		marks[h.Name] = markLog(t, c.agent(h))
	}
	for _, hl := range hostile {
		putLease(t, c.etcd, prefix+"/subnets/"+hl.key, hl.value, 0)
	}
	// An honest lease written last: once it is programmed, every hostile
	// one has been seen.
	honest := fakePeer{netip.MustParsePrefix("10.5.240.0/24"), netip.MustParseAddr("192.168.77.240"), "0a:00:00:00:00:f0"}
	putLease(t, c.etcd, leaseKey(honest.Subnet), honest.value(), 0)

	leases := hostLeases(t, c.etcd)
	for _, h := range c.hosts() {
		want := map[netip.Prefix]fakePeer{honest.Subnet: honest}
		for name, info := range infos {
			if name != h.Name {
				want[info.Subnet] = leases[info.Subnet]
			}
		}
		if h != h1 {
			// What only h1 must refuse (its own subnet and public IP) is,
			// for h2, a lease like any other: see docs/reliability.md.
			for _, hl := range hostile {
				if hl.onlyH1 {
					v4, _, _ := lease.ParseLeaseKey(hl.key)
					want[v4] = leases[v4]
				}
			}
		}
		nh := c.handle(h.NS)
		awaitKernelPeers(t, nh, wantKernelPeers(want), 60*time.Second, h.Name+" serves the honest peers only")
		lines := logSince(t, marks[h.Name])
		for _, hl := range hostile {
			if hl.onlyH1 && h != h1 {
				continue
			}
			warning := hl.warning
			if h != h1 && hl.warningOthers != "" {
				warning = hl.warningOthers
			}
			if len(grep(lines, warning, hl.key)) == 0 {
				t.Errorf("%s: %s (%s) not refused with a warning %q naming it", h.Name, hl.name, hl.key, warning)
			} else {
				t.Logf("%s refused %s: %s", h.Name, hl.name, firstLine(grep(lines, warning, hl.key)))
			}
		}
		// No route anywhere in the host for a hostile subnet.
		routes, err := nh.RouteList(nil, netlink.FAMILY_V4)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range routes {
			for _, hl := range hostile {
				if hl.onlyH1 && h != h1 {
					continue
				}
				if r.Dst != nil && strings.HasPrefix(hl.key, r.Dst.IP.String()+"-") {
					t.Errorf("%s: route %s programmed for %s", h.Name, r, hl.name)
				}
			}
		}
	}
	if err := c.ping(c.addContainer(h1).NS, c.addContainer(h2).IP, pingOpts2); err != nil {
		t.Errorf("honest traffic after the hostile leases: %v", err)
	}
}

func firstLine(lines []string) string {
	if len(lines) == 0 {
		return ""
	}
	return lines[0]
}
