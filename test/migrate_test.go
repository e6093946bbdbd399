package test

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/netagent/netagent/internal/await"
	"github.com/netagent/netagent/internal/lab"
	"github.com/netagent/netagent/lease"
	"github.com/netagent/netagent/subnetfile"
)

// The switch from flannel, as docs/migrating-from-flannel.md describes it.

// atomicPrefix is the etcd prefix of Project Atomic's flannel package.
const atomicPrefix = "/atomic.io/network"

// flannelHost is what flanneld (v0.28, vxlan, -ip-masq) leaves on a host
// when it stops: its lease, flannel.1, the peer entries, its iptables rules
// and its two files.
type flannelHost struct {
	subnet netip.Prefix
	mac    string // flannel.1's MAC, random as the kernel picked it
}

// flannelLeaseValue is the lease value flanneld writes, byte for byte
// (docs/compatibility.md §3.2).
func flannelLeaseValue(publicIP netip.Addr, mac string) string {
	return fmt.Sprintf(`{"PublicIP":"%s","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"%s"}}`, publicIP, mac)
}

// flannelRules are flanneld's masquerade and forward rules for network
// and its lease sn, in iptables-restore form, with flanneld's comments.
func flannelRules(network, sn netip.Prefix) string {
	r := func(s string) string { return s + ` -m comment --comment "flanneld masq"` }
	f := func(s string) string { return s + ` -m comment --comment "flanneld forward"` }
	n, s := network.String(), sn.String()
	return strings.Join([]string{
		"*nat",
		":FLANNEL-POSTRTG - [0:0]",
		r("-A POSTROUTING") + " -j FLANNEL-POSTRTG",
		r("-A FLANNEL-POSTRTG -m mark --mark 0x4000/0x4000") + " -j RETURN",
		r("-A FLANNEL-POSTRTG -s "+s+" -d "+n) + " -j RETURN",
		r("-A FLANNEL-POSTRTG -s "+n+" -d "+s) + " -j RETURN",
		r("-A FLANNEL-POSTRTG ! -s "+n+" -d "+s) + " -j RETURN",
		r("-A FLANNEL-POSTRTG -s "+n+" ! -d 224.0.0.0/4") + " -j MASQUERADE --random-fully",
		r("-A FLANNEL-POSTRTG ! -s "+n+" -d "+n) + " -j MASQUERADE --random-fully",
		"COMMIT",
		"*filter",
		":FLANNEL-FWD - [0:0]",
		f("-A FORWARD") + " -j FLANNEL-FWD",
		f("-A FLANNEL-FWD -s "+n) + " -j ACCEPT",
		f("-A FLANNEL-FWD -d "+n) + " -j ACCEPT",
		"COMMIT",
		"",
	}, "\n")
}

// prepareFlannelHost makes h as flanneld leaves it, with peer as the one
// other host whose lease flanneld had programmed.
func prepareFlannelHost(t *testing.T, c *cluster, h *lab.Host, fh flannelHost, network netip.Prefix, peer atomicLease) {
	t.Helper()
	ip := func(args ...string) {
		t.Helper()
		c.mustExec(h.NS, append([]string{"ip"}, args...)...)
	}
	local := h.Underlay.Addr().String()
	ip("link", "add", "flannel.1", "type", "vxlan", "id", "1", "local", local, "dev", "eth0", "dstport", "8472", "nolearning")
	ip("link", "set", "flannel.1", "address", fh.mac, "mtu", "1450", "up")
	ip("addr", "add", netip.PrefixFrom(fh.subnet.Addr(), 32).String(), "dev", "flannel.1")
	// flanneld's per-peer entries: no route protocol of its own (boot).
	ip("route", "add", peer.subnet.String(), "via", peer.subnet.Addr().String(), "dev", "flannel.1", "onlink")
	ip("neigh", "add", peer.subnet.Addr().String(), "lladdr", peer.mac, "dev", "flannel.1", "nud", "permanent")
	c.mustExec(h.NS, "bridge", "fdb", "add", peer.mac, "dev", "flannel.1", "dst", peer.publicIP.String(), "self", "permanent")

	rules := filepath.Join(h.Dir, "flannel-rules")
	if err := os.WriteFile(rules, []byte(flannelRules(network, fh.subnet)), 0o644); err != nil {
		t.Fatal(err)
	}
	c.mustExec(h.NS, "sh", "-c", "iptables-restore --noflush < "+rules)

	gw := netip.PrefixFrom(fh.subnet.Addr().Next(), fh.subnet.Bits())
	writeFile(t, h.SubnetFile(), fmt.Sprintf("FLANNEL_NETWORK=%s\nFLANNEL_SUBNET=%s\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n", network, gw))
	writeFile(t, filepath.Join(h.Dir, "docker"), fmt.Sprintf(
		"DOCKER_OPT_BIP=\"--bip=%s\"\nDOCKER_OPT_IPMASQ=\"--ip-masq=false\"\nDOCKER_OPT_MTU=\"--mtu=1450\"\nDOCKER_NETWORK_OPTIONS=\" --bip=%s --ip-masq=false --mtu=1450\"\n", gw, gw))
}

func writeFile(t *testing.T, path, text string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
}

// atomicLease is one lease under atomicPrefix.
type atomicLease struct {
	subnet   netip.Prefix
	publicIP netip.Addr
	mac      string
	etcdID   int64 // the etcd lease attached, 0 for none
}

func atomicLeases(t *testing.T, cli *clientv3.Client) []atomicLease {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := cli.Get(ctx, atomicPrefix+"/subnets/", clientv3.WithPrefix())
	if err != nil {
		t.Fatalf("list leases: %v", err)
	}
	var out []atomicLease
	for _, kv := range resp.Kvs {
		v4, _, err := lease.ParseLeaseKey(strings.TrimPrefix(string(kv.Key), atomicPrefix+"/subnets/"))
		if err != nil {
			t.Fatalf("lease key %s: %v", kv.Key, err)
		}
		a, err := lease.ParseLeaseAttrs(kv.Value)
		if err != nil {
			t.Fatalf("lease %s: %v", kv.Key, err)
		}
		var bd struct{ VtepMAC string }
		_ = json.Unmarshal(a.BackendData, &bd)
		out = append(out, atomicLease{subnet: v4, publicIP: a.PublicIP, mac: bd.VtepMAC, etcdID: kv.Lease})
	}
	return out
}

func leaseOf(leases []atomicLease, publicIP netip.Addr) []atomicLease {
	var out []atomicLease
	for _, l := range leases {
		if l.publicIP == publicIP {
			out = append(out, l)
		}
	}
	return out
}

// neighMAC is the MAC of the permanent neighbour ip on flannel.1 in nh.
func neighMAC(nh *netlink.Handle, ip netip.Addr) (string, error) {
	link, err := nh.LinkByName("flannel.1")
	if err != nil {
		return "", err
	}
	neighs, err := nh.NeighList(link.Attrs().Index, netlink.FAMILY_V4)
	if err != nil {
		return "", err
	}
	for _, n := range neighs {
		if n.State&netlink.NUD_PERMANENT != 0 && n.IP.String() == ip.String() {
			return n.HardwareAddr.String(), nil
		}
	}
	return "", fmt.Errorf("no permanent neighbour %s on flannel.1", ip)
}

// countJumps is how many rules of chain in table jump to target in ns.
func (c *cluster) countJumps(ns, table, chain, target string) (int, error) {
	out, err := c.exec(ns, "iptables", "-w", "-t", table, "-S", chain)
	if err != nil {
		return 0, err
	}
	n := 0
	for _, line := range strings.Split(string(out), "\n") {
		if strings.HasPrefix(line, "-A "+chain+" ") && strings.HasSuffix(line, "-j "+target) {
			n++
		}
	}
	return n, nil
}

// TestSwitchFromFlannel: a host that ran flanneld from Project Atomic's
// package (settings in /etc/sysconfig/flanneld, prefix /atomic.io/network)
// is switched to netagent in place, with only the packaging variables as
// its settings, while a container on another host pings one of its
// containers. It keeps its subnet, flannel.1 and its files, and replaces
// flanneld's MAC, routes and rules with its own; the ping comes back.
func TestSwitchFromFlannel(t *testing.T) {
	c := newCluster(t, clusterOptions{Hosts: 2})
	const cfg = `{"Network":"10.5.0.0/16","SubnetMax":"10.5.199.0","Backend":{"Type":"vxlan"}}`
	network := netip.MustParsePrefix("10.5.0.0/16")
	c.put(atomicPrefix+"/config", cfg)
	h1, h2 := c.hosts()[0], c.hosts()[1]
	fh := flannelHost{subnet: netip.MustParsePrefix("10.5.77.0/24"), mac: "be:ef:5a:11:77:01"}

	// h2's lease as flanneld wrote it, under an etcd lease of flanneld's
	// 24 h TTL, before h1 starts, so that h1 cannot draw that subnet.
	flannelKey := atomicPrefix + "/subnets/" + lease.LeaseKey(fh.subnet, netip.Prefix{})
	putLease(t, c.etcd, flannelKey, flannelLeaseValue(h2.Underlay.Addr(), fh.mac), 24*time.Hour)

	// h1: a netagent host of the cluster already.
	p1, err := c.lab.StartProcess(h1.NS, nil, append(c.agentArgs(h1), "--etcd-prefix="+atomicPrefix)...)
	if err != nil {
		t.Fatal(err)
	}
	c.mu.Lock()
	c.agents[h1.Name] = p1
	c.mu.Unlock()
	c.awaitSubnetFile(h1)
	await.Eventually(t, 30*time.Second, "h1 ready", func() error { return statusReady(c, h1) })
	h1Lease := leaseOf(atomicLeases(t, c.etcd), h1.Underlay.Addr())
	if len(h1Lease) != 1 {
		t.Fatalf("h1's leases: %+v, want one", h1Lease)
	}

	prepareFlannelHost(t, c, h2, fh, network, h1Lease[0])
	nh2 := c.handle(h2.NS)
	before, err := nh2.LinkByName("flannel.1")
	if err != nil {
		t.Fatal(err)
	}
	c1, c2 := c.addContainer(h1), c.addContainer(h2)
	if !fh.subnet.Contains(c2.IP) {
		t.Fatalf("container on the flannel host got %s, outside flanneld's lease %s", c2.IP, fh.subnet)
	}
	// The cluster works with h2 as flanneld left it.
	await.Eventually(t, 30*time.Second, "h1's container reaches the flannel host's", func() error {
		return c.ping(c1.NS, c2.IP, lab.PingOptions{Count: 1})
	})

	// The switch, under a ping at 10/s. The agent's settings are those of
	// /etc/sysconfig/flanneld, as netagent.service passes them; the flags
	// are only what a lab host needs to keep its files apart.
	pr := startPing(t, c1.NS, c2.IP, 100*time.Millisecond, 1200)
	env := []string{
		"FLANNEL_ETCD_ENDPOINTS=" + strings.Join(c.lab.EtcdEndpoints(), ","),
		"FLANNEL_ETCD_PREFIX=" + atomicPrefix,
		"FLANNEL_OPTIONS=-ip-masq -iface=eth0 -iptables-resync=1",
	}
	p2, err := c.lab.StartProcess(h2.NS, env, binaries(t)["./cmd/netagent"], "run",
		"--subnet-file="+h2.SubnetFile(), "--docker-opts-file="+filepath.Join(h2.Dir, "docker"),
		"--status-socket="+statusSocket(h2), "--log-level=debug")
	if err != nil {
		t.Fatal(err)
	}
	c.mu.Lock()
	c.agents[h2.Name] = p2
	c.mu.Unlock()
	await.Eventually(t, 60*time.Second, "h2 ready", func() error { return statusReady(c, h2) })

	// Same subnet, one lease, now with the MAC flannel.1 has.
	var own atomicLease
	await.Eventually(t, 30*time.Second, "h2's lease carries flannel.1's MAC", func() error {
		ls := leaseOf(atomicLeases(t, c.etcd), h2.Underlay.Addr())
		if len(ls) != 1 {
			return fmt.Errorf("h2's leases: %+v, want one", ls)
		}
		link, err := nh2.LinkByName("flannel.1")
		if err != nil {
			return err
		}
		if ls[0].mac != link.Attrs().HardwareAddr.String() {
			return fmt.Errorf("lease MAC %s, flannel.1's %s", ls[0].mac, link.Attrs().HardwareAddr)
		}
		own = ls[0]
		return nil
	})
	if own.subnet != fh.subnet {
		t.Errorf("h2 leases %s after the switch, want flanneld's %s", own.subnet, fh.subnet)
	}
	if own.etcdID == 0 {
		t.Errorf("h2's lease has no etcd lease attached after the switch")
	}
	info, err := subnetfile.Read(h2.SubnetFile())
	if err != nil {
		t.Fatal(err)
	}
	if info.Subnet != fh.subnet || info.Network != network || info.MTU != 1450 || !info.IPMasq {
		t.Errorf("subnet file after the switch: %+v, want flanneld's subnet %s, network %s, MTU 1450, masquerade", info, fh.subnet, network)
	}
	after, err := nh2.LinkByName("flannel.1")
	if err != nil {
		t.Fatal(err)
	}
	if after.Attrs().Index != before.Attrs().Index {
		t.Errorf("flannel.1 was re-created (index %d, was %d), want it kept", after.Attrs().Index, before.Attrs().Index)
	}
	// h1 follows the new MAC; flanneld's route on h2 is now the agent's.
	nh1 := c.handle(h1.NS)
	await.Eventually(t, 30*time.Second, "h1's neighbour for h2 has h2's new MAC", func() error {
		got, err := neighMAC(nh1, fh.subnet.Addr())
		if err != nil {
			return err
		}
		if got != own.mac {
			return fmt.Errorf("neighbour %s has %s, want %s", fh.subnet.Addr(), got, own.mac)
		}
		return nil
	})
	await.Eventually(t, 30*time.Second, "h2's route to h1 has the agent's protocol", func() error {
		routes, err := nh2.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Dst: netipToIPNet(h1Lease[0].subnet), Table: syscall.RT_TABLE_MAIN},
			netlink.RT_FILTER_DST|netlink.RT_FILTER_TABLE)
		if err != nil {
			return err
		}
		if len(routes) != 1 || routes[0].Protocol != 78 {
			return fmt.Errorf("routes to %s: %v, want one of protocol 78", h1Lease[0].subnet, routes)
		}
		return nil
	})
	// flanneld's jumps are replaced by the agent's, one for each chain.
	await.Eventually(t, 30*time.Second, "one jump to each of flannel's chains", func() error {
		for _, j := range [][3]string{{"nat", "POSTROUTING", "FLANNEL-POSTRTG"}, {"filter", "FORWARD", "FLANNEL-FWD"}} {
			n, err := c.countJumps(h2.NS, j[0], j[1], j[2])
			if err != nil {
				return err
			}
			if n != 1 {
				return fmt.Errorf("%s %s has %d jumps to %s", j[0], j[1], n, j[2])
			}
		}
		out, err := c.exec(h2.NS, "iptables", "-w", "-t", "nat", "-S", "POSTROUTING")
		if err != nil {
			return err
		}
		if strings.Contains(string(out), "flanneld masq") {
			return fmt.Errorf("flanneld's jump is still there:\n%s", out)
		}
		return nil
	})

	// Connectivity is back both ways.
	for _, p := range [][2]*container{{c1, c2}, {c2, c1}} {
		await.Eventually(t, 30*time.Second, p[0].NS+" reaches "+p[1].NS, func() error {
			return c.ping(p[0].NS, p[1].IP, lab.PingOptions{Count: 1})
		})
	}
	pr.stop()
	r := pr.wait(t)
	if r.received == 0 {
		t.Fatalf("no ping answered across the switch (%d sent)", r.sent)
	}
	t.Logf("switch from flanneld: %d of %d pings at 10/s lost (sequence numbers %v)", len(r.lost), r.sent, r.lost)
}

func netipToIPNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}

// TestUnitReadsFlanneldSettings: netagent.service reads flanneld's
// settings files when they exist, before its own (whose NETAGENT_* win
// anyway), and stops flanneld when it starts.
func TestUnitReadsFlanneldSettings(t *testing.T) {
	b, err := os.ReadFile("../dist/netagent.service")
	if err != nil {
		t.Fatal(err)
	}
	var envFiles []string
	conflicts := false
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "EnvironmentFile="); ok {
			envFiles = append(envFiles, v)
		}
		if line == "Conflicts=flanneld.service" {
			conflicts = true
		}
	}
	want := []string{"-/etc/sysconfig/flanneld", "-/etc/default/flanneld", "-/etc/sysconfig/netagent", "-/etc/default/netagent"}
	if strings.Join(envFiles, " ") != strings.Join(want, " ") {
		t.Errorf("EnvironmentFile= lines %q, want %q (optional, flanneld's first)", envFiles, want)
	}
	if !conflicts {
		t.Errorf("netagent.service lacks Conflicts=flanneld.service")
	}
}
