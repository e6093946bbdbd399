package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/netagent/netagent/backend"
	"github.com/netagent/netagent/backend/backendtest"
	"github.com/netagent/netagent/backend/wireguard"
	"github.com/netagent/netagent/internal/lab"
	"github.com/netagent/netagent/internal/nstest"
	"github.com/netagent/netagent/lease"
)

// wgBenchConfig is the network config of the WireGuard benchmarks.
const wgBenchConfig = `{"Network":"10.5.0.0/16","Backend":{"Type":"wireguard"}}`

// startWGAgent starts h's agent as startAgent does, on the userspace
// WireGuard, with the host's own key file and UAPI socket directory.
func (al *agentLab) startWGAgent(h *lab.Host) *lab.Proc {
	al.b.Helper()
	return al.startAgentWith(h, []string{"WIREGUARD_KEY_FILE=" + filepath.Join(h.Dir, "wgkey")},
		"--wireguard-impl=userspace", "--wireguard-socket-dir="+filepath.Join(h.Dir, "wireguard"))
}

// twoContainers starts the agents of the lab's first two hosts with
// start, attaches a container to each, and waits until the first reaches
// the second.
func (al *agentLab) twoContainers(start func(*lab.Host) *lab.Proc) (c1, c2 *lab.Container, ip1, ip2 netip.Addr) {
	al.b.Helper()
	h1, h2 := al.lab.Hosts()[0], al.lab.Hosts()[1]
	for _, h := range []*lab.Host{h1, h2} {
		start(h)
	}
	for _, h := range []*lab.Host{h1, h2} {
		al.awaitSubnetFile(h)
	}
	c1, ip1 = al.addContainer(h1, "c1")
	c2, ip2 = al.addContainer(h2, "c1")
	al.awaitPing(c1.NS, ip2)
	return c1, c2, ip1, ip2
}

// privateMounts runs script in a private mount namespace whose /run is a
// fresh tmpfs with /run/wireguard in it, so that wireguard-go and wg find
// their sockets there and never in the machine's /run/wireguard.
func privateMounts(script string) []string {
	return []string{"unshare", "-m", "--propagation", "private", "sh", "-c",
		"mount -t tmpfs tmpfs /run && mkdir /run/wireguard && " + script}
}

// debianWG starts Debian's wireguard-go as device wgdeb in h's namespace
// (in a mount namespace of its own, see privateMounts), configured by
// hand with h's agent key, port 51900, the peer's public key and
// endpoint, and a route to the peer's subnet through it; the agents'
// route for the whole network stays, this one is more specific.
//
// Equivalent to: `wireguard-go -f wgdeb; wg set wgdeb private-key <file>
// listen-port 51900 peer <key> endpoint <ip>:51900 allowed-ips <subnet>;
// ip link set wgdeb mtu 1420 up; ip route add <subnet> dev wgdeb`.
func (al *agentLab) debianWG(h, peer *lab.Host, peerSubnet netip.Prefix) {
	al.b.Helper()
	p, err := al.lab.StartProcess(h.NS, nil, privateMounts("exec wireguard-go -f wgdeb")...)
	if err != nil {
		al.b.Fatal(err)
	}
	al.b.Cleanup(func() { p.Stop(3 * time.Second) })
	pub := al.exec(h.NS, "sh", "-c", "wg pubkey < "+filepath.Join(peer.Dir, "wgkey"))
	deadline := time.Now().Add(10 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(al.ctx, 5*time.Second)
		_, err := al.lab.Exec(ctx, h.NS, "nsenter", "-t", strconv.Itoa(p.PID()), "-m",
			"wg", "set", "wgdeb", "private-key", filepath.Join(h.Dir, "wgkey"), "listen-port", "51900",
			"peer", strings.TrimSpace(pub), "endpoint", peer.Underlay.Addr().String()+":51900", "allowed-ips", peerSubnet.String())
		cancel()
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			al.b.Fatalf("wg set wgdeb on %s: %v\n%s", h.Name, err, p.Tail(1000))
		}
		time.Sleep(50 * time.Millisecond)
	}
	al.exec(h.NS, "ip", "link", "set", "wgdeb", "mtu", "1420", "up")
	al.exec(h.NS, "ip", "route", "replace", peerSubnet.String(), "dev", "wgdeb")
}

func (al *agentLab) exec(ns string, argv ...string) string {
	al.b.Helper()
	ctx, cancel := context.WithTimeout(al.ctx, 30*time.Second)
	defer cancel()
	out, err := al.lab.Exec(ctx, ns, argv...)
	if err != nil {
		al.b.Fatal(err)
	}
	return string(out)
}

// BenchmarkWireGuardThroughput: one TCP stream (iperf3, 5 s) from a
// container on h1 to one on h2 over netagent's userspace WireGuard, then,
// in the same lab with the agents stopped, over Debian's wireguard-go set
// up by hand with the same keys, and the underlay between h1 and h2; then
// over vxlan in a second lab of the same run.
func BenchmarkWireGuardThroughput(b *testing.B) {
	b.Logf("load average before: %s", agentLoad())
	var wg, deb, vx, under float64
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		al, closeLab := newAgentLab(b, 2, wgBenchConfig)
		h1, h2 := al.lab.Hosts()[0], al.lab.Hosts()[1]
		c1, c2, ip1, ip2 := al.twoContainers(al.startWGAgent)
		b.StartTimer()
		w := al.iperf(c2.NS, c1.NS, ip2)
		u := al.iperf(h2.NS, h1.NS, h2.Underlay.Addr())
		b.StopTimer()
		for _, h := range []*lab.Host{h1, h2} {
			if err := al.agents[h.Name].Stop(5 * time.Second); err != nil {
				b.Logf("agent on %s: %v", h.Name, err)
			}
		}
		s1, s2 := netip.PrefixFrom(ip1, 24).Masked(), netip.PrefixFrom(ip2, 24).Masked()
		al.debianWG(h1, h2, s2)
		al.debianWG(h2, h1, s1)
		al.awaitPing(c1.NS, ip2)
		b.StartTimer()
		d := al.iperf(c2.NS, c1.NS, ip2)
		b.StopTimer()
		closeLab()

		vl, closeVX := newAgentLab(b, 2, `{"Network":"10.5.0.0/16","Backend":{"Type":"vxlan"}}`)
		vc1, vc2, _, vip2 := vl.twoContainers(vl.startAgent)
		b.StartTimer()
		v := vl.iperf(vc2.NS, vc1.NS, vip2)
		b.StopTimer()
		closeVX()
		b.Logf("run %d: netagent wireguard (userspace) %.2f, Debian wireguard-go %.2f, vxlan %.2f, underlay %.2f Gbit/s", i+1, w, d, v, u)
		wg, deb, vx, under = wg+w, deb+d, vx+v, under+u
	}
	b.Logf("load average after: %s", agentLoad())
	n := float64(b.N)
	b.ReportMetric(wg/n, "wg-Gbit/s")
	b.ReportMetric(deb/n, "debian-wg-go-Gbit/s")
	b.ReportMetric(vx/n, "vxlan-Gbit/s")
	b.ReportMetric(under/n, "underlay-Gbit/s")
	b.ReportMetric(wg/deb, "wg/debian")
}

// BenchmarkWireGuardRestartGap: pings at 100/s from a container on h1 to
// one on h2 while h1's agent (userspace WireGuard) is killed with SIGKILL
// and started again; reports the echo requests lost, in ms of traffic.
func BenchmarkWireGuardRestartGap(b *testing.B) {
	var lost float64
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		al, closeLab := newAgentLab(b, 2, wgBenchConfig)
		h1 := al.lab.Hosts()[0]
		c1, _, _, ip2 := al.twoContainers(al.startWGAgent)
		ping, err := al.lab.StartProcess(c1.NS, nil, "ping", "-n", "-q", "-i", "0.01", "-c", "500", "-W", "1", ip2.String())
		if err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		if err := al.agents[h1.Name].Kill(); err != nil {
			b.Fatal(err)
		}
		<-al.agents[h1.Name].Done()
		al.startWGAgent(h1)
		al.awaitPing(c1.NS, ip2)
		b.StopTimer()
		ctx, cancel := context.WithTimeout(al.ctx, time.Minute)
		ping.Wait(ctx)
		cancel()
		out := ping.Tail(2000)
		var sent, got int
		if i := strings.Index(out, " packets transmitted, "); i >= 0 {
			line := out[strings.LastIndex(out[:i], "\n")+1:]
			fmt.Sscanf(line, "%d packets transmitted, %d received", &sent, &got)
		}
		if sent == 0 {
			b.Fatalf("cannot read ping's summary:\n%s", out)
		}
		b.Logf("run %d: %d of %d lost at 100/s: %d ms", i+1, sent-got, sent, (sent-got)*10)
		lost += float64(sent-got) * 10
		closeLab()
	}
	b.ReportMetric(lost/float64(b.N), "ms-lost")
}

// wgLease is dpPeer(i) as a wireguard lease, with public key key.
func wgLease(i int, key wgtypes.Key) lease.Lease {
	sub, pub, _ := dpPeer(i)
	return lease.Lease{Subnet: sub, Attrs: lease.LeaseAttrs{PublicIP: pub, BackendType: wireguard.Type,
		BackendData: json.RawMessage(fmt.Sprintf(`{"PublicKey":%q,"Port":51820}`, key.String()))}}
}

// wgKeys returns n generated public keys.
func wgKeys(b *testing.B, n int) []wgtypes.Key {
	keys := make([]wgtypes.Key, n)
	for i := range keys {
		k, err := wgtypes.GeneratePrivateKey()
		if err != nil {
			b.Fatal(err)
		}
		keys[i] = k.PublicKey()
	}
	return keys
}

// wgBench is a userspace wireguard backend running in a namespace of its
// own, with its UAPI socket directory.
type wgBench struct {
	bk      *wireguard.Backend
	updates chan<- backend.Update
	stop    func()
	sockDir string
}

// startWGBench starts the backend in a fresh namespace, with the network
// 10.0.0.0/8 and this host at 10.0.1.0/24, 192.168.77.1, reading updates
// from an unbuffered channel; it is not given its leases yet.
func startWGBench(b *testing.B) *wgBench {
	ns := dpHost(b)
	dir := b.TempDir()
	ext := backendtest.Ext(b, ns, "eth0", netip.MustParseAddr("192.168.77.1"))
	cfg := &lease.Config{EnableIPv4: true, Network: netip.MustParsePrefix("10.0.0.0/8"), SubnetLen: 24,
		BackendType: wireguard.Type, Backend: json.RawMessage(`{"Type":"wireguard"}`)}
	w := &wgBench{sockDir: filepath.Join(dir, "sock")}
	var err error
	w.bk, err = wireguard.New(backend.Options{Handle: ns.Handle, Netns: ns.Netns, Ext: ext, Config: cfg, ResyncInterval: time.Hour},
		wireguard.Options{Impl: wireguard.ImplUserspace, SocketDir: w.sockDir, KeyFile: filepath.Join(dir, "wgkey")})
	if err != nil {
		b.Fatal(err)
	}
	// Unbuffered: a send returns once the engine has taken the update,
	// so after a second send the first has been handled (see
	// BenchmarkWireGuardEventLatency).
	ch := make(chan backend.Update)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := w.bk.Run(ctx, ch); err != nil {
			b.Errorf("wireguard backend: Run: %v", err)
		}
	}()
	w.updates, w.stop = ch, sync.OnceFunc(func() { cancel(); <-done })
	b.Cleanup(w.stop)
	return w
}

// coldStart hands the backend its own lease and a snapshot of a peer per
// key (wgLease).
func (w *wgBench) coldStart(keys []wgtypes.Key) {
	snap := &lease.Batch{Snapshot: true}
	for j := range keys {
		snap.Events = append(snap.Events, lease.Event{Lease: wgLease(j, keys[j])})
	}
	own := &lease.Lease{Subnet: netip.MustParsePrefix("10.0.1.0/24"),
		Attrs: lease.LeaseAttrs{PublicIP: netip.MustParseAddr("192.168.77.1"), BackendType: wireguard.Type}}
	own.Attrs.BackendData, _ = w.bk.BackendData()
	w.updates <- backend.Update{Own: own, Batch: snap}
}

// BenchmarkWireGuardColdStart measures a cold start with 5,000 wireguard
// peers on the userspace implementation: from the snapshot being handed
// to Run to the first pass having configured every peer (one
// configuration call), and the process's peak RSS after it.
func BenchmarkWireGuardColdStart(b *testing.B) {
	nstest.RequireRoot(b)
	keys := wgKeys(b, dpPeers)
	var total time.Duration
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		w := startWGBench(b)
		b.StartTimer()
		t0 := time.Now()
		w.coldStart(keys)
		<-w.bk.Ready()
		total += time.Since(t0)
		b.StopTimer()
		st := w.bk.Status()
		configured := 0
		for _, p := range st.Peers {
			if p.Programmed && p.WireGuard != nil {
				configured++
			}
		}
		if configured != dpPeers {
			b.Fatalf("%d peers configured after the first pass, want %d", configured, dpPeers)
		}
		w.stop()
	}
	b.ReportMetric(float64(total.Milliseconds())/float64(b.N), "ms/coldstart")
	if kb, err := agentProcStatusKB(os.Getpid(), "VmHWM"); err == nil {
		b.ReportMetric(float64(kb)/1024, "MiB-peak-rss-process")
	}
}
