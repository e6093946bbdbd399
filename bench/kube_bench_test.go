package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"

	"github.com/netagent/netagent/internal/kubetest"
	"github.com/netagent/netagent/internal/lab"
)

// The kube benchmarks run one agent in kube mode (--kube-subnet-mgr,
// vxlan) against a real kube-apiserver on a real etcd (internal/kubetest)
// holding kubeNodes Nodes, created through the API: the agent's own Node
// and kubeNodes-1 peers with pod CIDRs and flannel's annotations.

// kubeNodes is the number of Nodes, the agent's included.
const kubeNodes = 1000

// kubeNetConf is 10.0.0.0/8 cut into /24s, vxlan: room for kubeNodes.
const kubeNetConf = `{"Network":"10.0.0.0/8","Backend":{"Type":"vxlan"}}`

const (
	kubePrefix   = "flannel.alpha.coreos.com/"
	kubeHostNode = "bench-host"
	// kubeWorkers create the Nodes in parallel.
	kubeWorkers = 8
)

// kubePeer returns Node i's name, pod CIDR, public address and VTEP MAC
// (i = 0 is the agent's own Node; its public address and MAC are unused).
func kubePeer(i int) (name string, cidr netip.Prefix, pub netip.Addr, mac net.HardwareAddr) {
	name = fmt.Sprintf("node-%04d", i)
	cidr = netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(i >> 8), byte(i), 0}), 24)
	pub = netip.AddrFrom4([4]byte{172, 20, byte(i / 200), byte(i%200 + 1)})
	mac = net.HardwareAddr{0x0e, 0, 0, 0, byte(i >> 8), byte(i)}
	return name, cidr, pub, mac
}

// kubeAnnotations are the annotations flannel writes for a vxlan lease.
func kubeAnnotations(pub netip.Addr, mac net.HardwareAddr) map[string]string {
	return map[string]string{
		kubePrefix + "kube-subnet-manager": "true",
		kubePrefix + "backend-type":        "vxlan",
		kubePrefix + "backend-data":        fmt.Sprintf(`{"VNI":1,"VtepMAC":"%s"}`, mac),
		kubePrefix + "public-ip":           pub.String(),
	}
}

// kubeLab is a one-host lab whose namespace also runs the API server
// (the agent reaches it on 127.0.0.1), with the Nodes registered.
type kubeLab struct {
	b       *testing.B
	lab     *lab.Lab
	host    *lab.Host
	c       *kubetest.Cluster
	admin   kubernetes.Interface
	netConf string
	bin     string
	created time.Duration
}

// newKubeLab builds the lab, starts the API server in its host's
// namespace, grants the agent the deployment's RBAC rules and creates
// the Nodes: the agent's own (its pod CIDR allocated at creation, as the
// controller manager's --allocate-node-cidrs would soon after) and
// kubeNodes-1 peers with pod CIDRs and annotations. Everything is removed
// when the benchmark's run ends (b.Cleanup: the API server and its etcd,
// then the lab); run the kube benchmarks with -benchtime=1x.
func newKubeLab(b *testing.B) *kubeLab {
	b.Helper()
	if os.Geteuid() != 0 {
		b.Skip("kube benchmarks need root: they create network namespaces")
	}
	bins := agentBinaries(b)
	ctx, cancel := context.WithCancel(context.Background())
	l, err := lab.New(ctx, lab.Options{Hosts: 1})
	if err != nil {
		cancel()
		b.Fatalf("lab: %v", err)
	}
	b.Cleanup(func() {
		if err := l.Close(); err != nil {
			b.Errorf("lab close: %v", err)
		}
		cancel()
	})
	h := l.Hosts()[0]
	kl := &kubeLab{b: b, lab: l, host: h, bin: bins["./cmd/netagent"]}
	kl.c = kubetest.Start(b, kubetest.Options{NS: h.NS})
	kl.c.GrantAgent(b, kubetest.AgentRules...)
	kl.netConf = filepath.Join(h.Dir, "net-conf.json")
	if err := os.WriteFile(kl.netConf, []byte(kubeNetConf), 0o644); err != nil {
		b.Fatal(err)
	}
	// The administrator's client without client-go's default rate limit
	// (5 requests per second).
	cfg := kl.c.RESTConfig(b, kubetest.AdminUser)
	cfg.QPS, cfg.Burst = -1, 0
	if kl.admin, err = kubernetes.NewForConfig(cfg); err != nil {
		b.Fatal(err)
	}
	// One request first: the parallel creates then share its connection
	// instead of dialling into the namespace at once.
	wctx, wcancel := context.WithTimeout(context.Background(), time.Minute)
	_, err = kl.admin.CoreV1().Nodes().List(wctx, metav1.ListOptions{Limit: 1})
	wcancel()
	if err != nil {
		b.Fatalf("list Nodes: %v", err)
	}
	t0 := time.Now()
	kl.createNodes()
	kl.created = time.Since(t0)
	return kl
}

// createNodes creates the kubeNodes Nodes, kubeWorkers at a time.
func (kl *kubeLab) createNodes() {
	kl.b.Helper()
	idx := make(chan int)
	errs := make(chan error, kubeWorkers)
	var wg sync.WaitGroup
	for range kubeWorkers {
		wg.Go(func() {
			for i := range idx {
				name, cidr, pub, mac := kubePeer(i)
				n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name},
					Spec: corev1.NodeSpec{PodCIDR: cidr.String(), PodCIDRs: []string{cidr.String()}}}
				if i == 0 {
					n.Name = kubeHostNode
				} else {
					n.Annotations = kubeAnnotations(pub, mac)
				}
				ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
				_, err := kl.admin.CoreV1().Nodes().Create(ctx, n, metav1.CreateOptions{})
				cancel()
				if err != nil {
					errs <- fmt.Errorf("create Node %s: %w", n.Name, err)
					return
				}
			}
		})
	}
	var err error
feed:
	for i := range kubeNodes {
		select {
		case idx <- i:
		case err = <-errs:
			break feed
		}
	}
	close(idx)
	wg.Wait()
	if err == nil && len(errs) > 0 {
		err = <-errs
	}
	if err != nil {
		kl.b.Fatal(err)
	}
}

// startAgent starts `netagent run --kube-subnet-mgr` in the host's
// namespace, as its Node, with the end-to-end tests' other flags.
func (kl *kubeLab) startAgent() *lab.Proc {
	kl.b.Helper()
	h := kl.host
	p, err := kl.lab.StartProcess(h.NS, []string{"NODE_NAME=" + kubeHostNode},
		kl.bin, "run", "--kube-subnet-mgr",
		"--kubeconfig-file="+kl.c.AgentKubeconfig,
		"--net-config-path="+kl.netConf,
		"--subnet-file="+h.SubnetFile(),
		"--docker-opts-file="+filepath.Join(h.Dir, "docker"),
		"--status-socket="+agentStatusSocket(h),
		"--ip-masq")
	if err != nil {
		kl.b.Fatalf("start agent: %v", err)
	}
	return p
}

// nsHandle returns a handle on the host's namespace, closed with the
// benchmark.
func (kl *kubeLab) nsHandle() netns.NsHandle {
	kl.b.Helper()
	nsh, err := netns.GetFromPath(lab.NSPath(kl.host.NS))
	if err != nil {
		kl.b.Fatal(err)
	}
	kl.b.Cleanup(func() { nsh.Close() })
	return nsh
}

// coldStart starts the agent and waits until the kernel notified a
// route, a neighbour and an fdb entry for each peer; it returns the time
// from t0, just before the start, to the last of those notifications.
func (kl *kubeLab) coldStart() (d time.Duration, t0 time.Time, p *lab.Proc) {
	kl.b.Helper()
	const peers = kubeNodes - 1
	stop := make(chan struct{})
	defer close(stop)
	ks, err := agentWatchKernel(kl.nsHandle(), stop)
	if err != nil {
		kl.b.Fatal(err)
	}
	t0 = time.Now()
	p = kl.startAgent()
	deadline := time.After(agentColdStartTimeout)
	for {
		if errs := ks.errors(); len(errs) > 0 {
			kl.b.Fatalf("kernel notifications lost during the cold start: %v", errs)
		}
		r, n, f, last := ks.counts()
		if r >= peers && n >= peers && f >= peers {
			return last.Sub(t0), t0, p
		}
		select {
		case <-ks.wake:
		case <-p.Done():
			kl.b.Fatalf("agent exited during the cold start:\n%s", p.Tail(2000))
		case <-deadline:
			kl.b.Fatalf("cold start: after %v, %d routes, %d neighbours, %d fdb entries of %d\n%s",
				agentColdStartTimeout, r, n, f, peers, p.Tail(2000))
		}
	}
}

// BenchmarkKubeColdStart starts `netagent run --kube-subnet-mgr` on a host
// whose API server holds kubeNodes Nodes (its own and kubeNodes-1 vxlan
// peers) and measures the time from process start to the kernel holding
// a route, a neighbour and an fdb entry for every peer (the kernel's
// notification of the last one), with the agent's milestones from its
// log.
func BenchmarkKubeColdStart(b *testing.B) {
	b.Logf("load average before: %s", agentLoad())
	var total, cpu time.Duration
	milestones := map[string]time.Duration{}
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		kl := newKubeLab(b)
		b.StartTimer()
		d, t0, p := kl.coldStart()
		b.StopTimer()
		c, err := agentProcCPU(p.PID())
		if err != nil {
			b.Fatal(err)
		}
		ms, err := agentLogMilestones(p.LogPath, t0)
		if err != nil {
			b.Fatal(err)
		}
		total, cpu = total+d, cpu+c
		for m, v := range ms {
			milestones[m] += v
		}
		b.Logf("run %d: %d Nodes created in %v; cold start %v, agent CPU %v; milestones (approximate, from the log): %s",
			i+1, kubeNodes, kl.created.Round(time.Millisecond), d.Round(time.Millisecond), c, agentFormatMilestones(ms))
	}
	b.Logf("load average after: %s", agentLoad())
	n := float64(b.N)
	b.ReportMetric(agentMS(total)/n, "ms/coldstart")
	b.ReportMetric(agentMS(cpu)/n, "ms-cpu/coldstart")
}

// vxlanPeerAt returns when both of a vxlan peer's entries with VTEP MAC
// mac were notified (the later), and whether they were: the neighbour of
// its subnet's first address and the fdb entry towards its public address.
func (ks *agentKernelSeen) vxlanPeerAt(cidr netip.Prefix, pub netip.Addr, mac net.HardwareAddr) (time.Time, bool) {
	ks.mu.Lock()
	defer ks.mu.Unlock()
	n, okN := ks.lladdrs[agentNeighKey{family: netlink.FAMILY_V4, ip: cidr.Addr(), mac: mac.String()}]
	f, okF := ks.lladdrs[agentNeighKey{family: syscall.AF_BRIDGE, ip: pub, mac: mac.String()}]
	if !okN || !okF {
		return time.Time{}, false
	}
	if f.After(n) {
		return f, true
	}
	return n, true
}

// BenchmarkKubeEventLatency: with the agent serving kubeNodes-1 peers,
// 60 peers' Nodes are patched one at a time with a new public address and
// VTEP MAC (the annotations a restarted flannel host would write); each
// one's latency runs from the patch's reply (and, as patch-p50/p99, from
// the patch being issued) to the kernel notifying both of the peer's new
// entries (its neighbour with the new MAC, its fdb entry towards the new
// address).
func BenchmarkKubeEventLatency(b *testing.B) {
	const events = 60
	b.Logf("load average before: %s", agentLoad())
	var fromAck, fromPatch []time.Duration
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		kl := newKubeLab(b)
		kl.coldStart()
		stop := make(chan struct{})
		ks, err := agentWatchKernel(kl.nsHandle(), stop)
		if err != nil {
			close(stop)
			b.Fatal(err)
		}
		b.StartTimer()
		for e := range events {
			peer := 1 + e*(kubeNodes-1)/events
			name, cidr, _, _ := kubePeer(peer)
			pub := netip.AddrFrom4([4]byte{172, 21, byte(i), byte(e + 1)})
			mac := net.HardwareAddr{0x0e, 1, 0, byte(i), byte(peer >> 8), byte(peer)}
			patch, _ := json.Marshal(map[string]any{"metadata": map[string]any{"annotations": kubeAnnotations(pub, mac)}})
			ctx, cancel := context.WithTimeout(context.Background(), agentEventTimeout)
			t0 := time.Now()
			_, err := kl.admin.CoreV1().Nodes().Patch(ctx, name, types.MergePatchType, patch, metav1.PatchOptions{})
			t1 := time.Now()
			if err != nil {
				cancel()
				b.Fatalf("patch Node %s: %v", name, err)
			}
			for {
				at, ok := ks.vxlanPeerAt(cidr, pub, mac)
				if ok {
					fromAck, fromPatch = append(fromAck, at.Sub(t1)), append(fromPatch, at.Sub(t0))
					break
				}
				select {
				case <-ks.wake:
				case <-ctx.Done():
					cancel()
					b.Fatalf("Node %s patched to %s, %s: entries not in the kernel within %v (subscription errors: %v)",
						name, pub, mac, agentEventTimeout, ks.errors())
				}
			}
			cancel()
		}
		b.StopTimer()
		close(stop)
		run := slices.Sorted(slices.Values(fromAck[len(fromAck)-events:]))
		b.Logf("run %d: from the patch's reply: p50 %v, 5 slowest %v", i+1, agentPct(run, 50), run[len(run)-5:])
	}
	b.Logf("load average after: %s", agentLoad())
	agentReportLatencies(b, fromAck, fromPatch, "patch")
}
