package bench

import (
	"encoding/json"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/netagent/netagent/backend"
	"github.com/netagent/netagent/backend/backendtest"
	"github.com/netagent/netagent/backend/vxlan"
	"github.com/netagent/netagent/internal/nstest"
	"github.com/netagent/netagent/lease"
)

// dpPeers is the number of peers of the data-plane benchmarks.
const dpPeers = 5000

// dpPeer returns the i-th synthetic peer: subnet 10.<1+i/256>.<i%256>.0/24,
// public IP 172.16.0.0+10+i, VTEP MAC 02:00:00:00:<i>.
func dpPeer(i int) (netip.Prefix, netip.Addr, net.HardwareAddr) {
	sub := netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(1 + i/256), byte(i % 256), 0}), 24)
	n := 10 + i
	pub := netip.AddrFrom4([4]byte{172, byte(16 + n>>16), byte(n >> 8), byte(n)})
	mac := net.HardwareAddr{0x02, 0, 0, byte(i >> 16), byte(i >> 8), byte(i)}
	return sub, pub, mac
}

func dpLease(i int) lease.Lease {
	sub, pub, mac := dpPeer(i)
	return lease.Lease{Subnet: sub, Attrs: lease.LeaseAttrs{PublicIP: pub, BackendType: vxlan.Type,
		BackendData: json.RawMessage(`{"VNI":1,"VtepMAC":"` + mac.String() + `"}`)}}
}

// dpHost is a namespace with eth0 (192.168.77.1/24) on a veth pair.
func dpHost(b *testing.B) *nstest.NS {
	a, _ := nstest.Underlay(b)
	a.AddrAdd(b, "eth0", "192.168.77.1/24")
	return a
}

func dpStart(b *testing.B, ns *nstest.NS) (*vxlan.Backend, chan<- backend.Update, func()) {
	ext := backendtest.Ext(b, ns, "eth0", netip.MustParseAddr("192.168.77.1"))
	bk, err := vxlan.New(backend.Options{Handle: ns.Handle, Netns: ns.Netns, Ext: ext,
		Config: &lease.Config{BackendType: vxlan.Type, Backend: json.RawMessage(`{"Type":"vxlan"}`)}, ResyncInterval: time.Hour})
	if err != nil {
		b.Fatal(err)
	}
	updates, stop := backendtest.Start(b, bk)
	return bk, updates, stop
}

func dpOwn() *lease.Lease {
	return &lease.Lease{Subnet: netip.MustParsePrefix("10.0.1.0/24"),
		Attrs: lease.LeaseAttrs{PublicIP: netip.MustParseAddr("192.168.77.1"), BackendType: vxlan.Type}}
}

func dpSnapshot(n int) *lease.Batch {
	batch := &lease.Batch{Snapshot: true}
	for i := range n {
		batch.Events = append(batch.Events, lease.Event{Lease: dpLease(i)})
	}
	return batch
}

// dpCount counts the entries of flannel.1: routes with the backend's
// protocol, permanent neighbours and unicast fdb entries.
func dpCount(b *testing.B, h *netlink.Handle) (routes, neighs, fdbs int) {
	l, err := h.LinkByName("flannel.1")
	if err != nil {
		b.Fatal(err)
	}
	rs, err := h.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Protocol: backend.RouteProtocol}, netlink.RT_FILTER_PROTOCOL)
	if err != nil {
		b.Fatal(err)
	}
	ns, err := h.NeighList(l.Attrs().Index, netlink.FAMILY_V4)
	if err != nil {
		b.Fatal(err)
	}
	fs, err := h.NeighList(l.Attrs().Index, syscall.AF_BRIDGE)
	if err != nil {
		b.Fatal(err)
	}
	for _, n := range ns {
		if n.State == netlink.NUD_PERMANENT {
			neighs++
		}
	}
	for _, f := range fs {
		if f.IP != nil && f.HardwareAddr[0]&1 == 0 {
			fdbs++
		}
	}
	return len(rs), neighs, fdbs
}

// dpFloor programs the same entries with `ip -batch` and `bridge -batch`
// into a fresh namespace and returns how long the two commands took.
func dpFloor(b *testing.B) time.Duration {
	ns := dpHost(b)
	ns.IP(b, "link", "add", "flannel.1", "type", "vxlan", "id", "1", "local", "192.168.77.1", "dev", "eth0", "dstport", "8472", "nolearning")
	ns.IP(b, "link", "set", "flannel.1", "up")
	var ipb, brb strings.Builder
	for i := range dpPeers {
		sub, pub, mac := dpPeer(i)
		fmt.Fprintf(&ipb, "route add %s via %s dev flannel.1 onlink proto 78\n", sub, sub.Addr())
		fmt.Fprintf(&ipb, "neigh add %s lladdr %s dev flannel.1 nud permanent\n", sub.Addr(), mac)
		fmt.Fprintf(&brb, "fdb add %s dev flannel.1 dst %s self permanent\n", mac, pub)
	}
	dir := b.TempDir()
	ipFile, brFile := filepath.Join(dir, "ip.batch"), filepath.Join(dir, "bridge.batch")
	if err := os.WriteFile(ipFile, []byte(ipb.String()), 0o644); err != nil {
		b.Fatal(err)
	}
	if err := os.WriteFile(brFile, []byte(brb.String()), 0o644); err != nil {
		b.Fatal(err)
	}
	t0 := time.Now()
	for _, c := range [][]string{{"ip", "-n", ns.Name, "-batch", ipFile}, {"bridge", "-n", ns.Name, "-batch", brFile}} {
		if out, err := exec.Command(c[0], c[1:]...).CombinedOutput(); err != nil {
			b.Fatalf("%s: %v: %s", strings.Join(c, " "), err, out)
		}
	}
	d := time.Since(t0)
	if r, n, f := dpCount(b, ns.Handle); r != dpPeers || n != dpPeers || f != dpPeers {
		b.Fatalf("ip -batch programmed %d routes, %d neighbours, %d fdb entries", r, n, f)
	}
	return d
}

// BenchmarkDataplaneColdStart measures a cold start with 5,000 vxlan peers:
// from the snapshot being handed to Run to the first pass having put every
// route, neighbour and fdb entry in the kernel, next to `ip -batch` +
// `bridge -batch` for the same entries.
func BenchmarkDataplaneColdStart(b *testing.B) {
	nstest.RequireRoot(b)
	var ours, floor time.Duration
	var routes, early int
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		floor += dpFloor(b)
		ns := dpHost(b)
		bk, updates, stop := dpStart(b, ns)
		snap := dpSnapshot(dpPeers)
		done := make(chan struct{})
		ord, err := backendtest.WatchOrder(ns.Netns, done)
		if err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		t0 := time.Now()
		updates <- backend.Update{Own: dpOwn(), Batch: snap}
		for bk.Status().Counters.Passes == 0 {
			time.Sleep(time.Millisecond)
		}
		ours += time.Since(t0)
		b.StopTimer()
		if r, n, f := dpCount(b, ns.Handle); r != dpPeers || n != dpPeers || f != dpPeers {
			b.Fatalf("after the first pass: %d routes, %d neighbours, %d fdb entries; want %d each", r, n, f, dpPeers)
		}
		for n, _ := ord.Routes(); n < dpPeers && ord.Err() == nil; n, _ = ord.Routes() {
			<-ord.Wake()
		}
		if err := ord.Err(); err != nil {
			b.Logf("route order watch: %v", err)
		}
		n, e := ord.Routes()
		routes, early = routes+n, early+len(e)
		close(done)
		stop()
	}
	b.ReportMetric(float64(ours.Milliseconds())/float64(b.N), "ms/coldstart")
	b.ReportMetric(float64(floor.Milliseconds())/float64(b.N), "ms/ip-batch")
	b.ReportMetric(float64(ours)/float64(floor), "ratio")
	// Routes that reached the kernel before their peer's neighbour or fdb
	// entry (target 0), of the routes watched.
	b.ReportMetric(float64(early), "route-before-neigh")
	b.ReportMetric(float64(routes), "routes-watched")
}

// BenchmarkDataplaneEventLatency measures, with 5,000 peers programmed, the
// time from an Update with one new lease to its fdb entry (the last of its
// three) being notified by the kernel; p50 and p99 over 50 events.
func BenchmarkDataplaneEventLatency(b *testing.B) {
	nstest.RequireRoot(b)
	const events = 50
	var all []time.Duration
	var extraPasses uint64
	var routes, early int
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		ns := dpHost(b)
		bk, updates, stop := dpStart(b, ns)
		updates <- backend.Update{Own: dpOwn(), Batch: dpSnapshot(dpPeers)}
		for bk.Status().Counters.Passes == 0 {
			time.Sleep(time.Millisecond)
		}
		done := make(chan struct{})
		ord, err := backendtest.WatchOrder(ns.Netns, done)
		if err != nil {
			b.Fatal(err)
		}
		passes := bk.Status().Counters.Passes
		b.StartTimer()
		for k := range events {
			idx := dpPeers + 100 + k
			t0 := time.Now()
			updates <- backend.Update{Batch: &lease.Batch{Events: []lease.Event{{Lease: dpLease(idx)}}}}
			// The route is the peer's last entry (§5.2).
			for n, _ := ord.Routes(); n < k+1; n, _ = ord.Routes() {
				<-ord.Wake()
			}
			all = append(all, time.Since(t0))
		}
		b.StopTimer()
		n, e := ord.Routes()
		routes, early = routes+n, early+len(e)
		extraPasses += bk.Status().Counters.Passes - passes
		close(done)
		stop()
	}
	slices.Sort(all)
	b.ReportMetric(float64(all[len(all)/2].Microseconds())/1000, "ms-p50")
	b.ReportMetric(float64(all[len(all)*99/100].Microseconds())/1000, "ms-p99")
	b.ReportMetric(float64(all[len(all)-1].Microseconds())/1000, "ms-max")
	// Full passes run meanwhile (notifications of the cold start being
	// checked): events should not need any.
	b.ReportMetric(float64(extraPasses)/float64(b.N), "full-passes")
	// New peers whose route reached the kernel before their neighbour or
	// fdb entry (target 0), of the routes watched.
	b.ReportMetric(float64(early), "route-before-neigh")
	b.ReportMetric(float64(routes), "routes-watched")
}
