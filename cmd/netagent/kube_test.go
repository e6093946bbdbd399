package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	authzv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"

	"github.com/netagent/netagent/agent"
	"github.com/netagent/netagent/internal/await"
	"github.com/netagent/netagent/internal/kubetest"
	"github.com/netagent/netagent/internal/netnsguard"
	"github.com/netagent/netagent/internal/nstest"
)

// runMainEnv makes the test binary run main (the netagent command) with
// its arguments instead of the tests: the kube tests start the agent this
// way inside a test namespace, as a separate process.
// (Not NETAGENT_*: the agent warns about those that name no flag.)
const runMainEnv = "TEST_RUN_NETAGENT_MAIN"

func TestMain(m *testing.M) {
	if os.Getenv(runMainEnv) == "1" {
		main()
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// kubeWait bounds every wait on the API server and the agent: it only
// bounds a hang.
const kubeWait = 2 * time.Minute

const (
	kubePrefix  = "flannel.alpha.coreos.com/"
	kubeNetConf = `{"Network": "10.244.0.0/16", "Backend": {"Type": "vxlan"}}`
)

// kubeHost is a real API server, and a host for the agent: the agent runs
// in the API server's namespace (it reaches it on 127.0.0.1), with eth0,
// 192.168.90.1/24 and fd90::1/64, a veth to a neighbour namespace as its
// underlay.
type kubeHost struct {
	c       *kubetest.Cluster
	admin   kubernetes.Interface
	h       *netlink.Handle
	dir     string
	netConf string
	socket  string
	// apiArgs say how the agent reaches the API server.
	apiArgs []string
}

func newKubeHost(t *testing.T, netConf string) *kubeHost {
	t.Helper()
	nstest.RequireRoot(t)
	ns := nstest.NewNS(t, "kagent")
	c := kubetest.Start(t, kubetest.Options{NS: ns.Name})
	nstest.Veth(t, ns, "eth0", nstest.NewNS(t, "kpeer"), "eth0")
	ns.AddrAdd(t, "eth0", "192.168.90.1/24", "fd90::1/64")
	k := &kubeHost{c: c, admin: c.Client(t, kubetest.AdminUser), h: ns.Handle, dir: t.TempDir(),
		apiArgs: []string{"--kubeconfig-file", c.AgentKubeconfig}}
	k.netConf = filepath.Join(k.dir, "net-conf.json")
	k.socket = filepath.Join(k.dir, "status.sock")
	if err := os.WriteFile(k.netConf, []byte(netConf), 0o644); err != nil {
		t.Fatal(err)
	}
	return k
}

// agentProc is the agent running in the host's namespace.
type agentProc struct {
	cmd  *exec.Cmd
	log  string
	done chan struct{}
	err  error // cmd.Wait's, set before done is closed
}

// output is what the agent wrote on stderr.
func (p *agentProc) output() string {
	b, _ := os.ReadFile(p.log)
	return string(b)
}

// exited reports whether the agent has exited.
func (p *agentProc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// startAgent runs `netagent run --kube-subnet-mgr ...` for Node node in the
// host's namespace and stops it (SIGTERM, by PID) when the test ends.
func (k *kubeHost) startAgent(t *testing.T, node string) *agentProc {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	args := append([]string{"netns", "exec", k.c.NS, exe, "run", "--kube-subnet-mgr", "--net-config-path", k.netConf}, k.apiArgs...)
	args = append(args, "--iface", "eth0", "--ip-masq", "--probe=false",
		"--subnet-file", filepath.Join(k.dir, "subnet.env"), "--docker-opts-file", "",
		"--status-socket", k.socket)
	p := &agentProc{cmd: exec.Command("ip", args...), log: filepath.Join(k.dir, "agent.log"), done: make(chan struct{})}
	p.cmd.Env = append(os.Environ(), runMainEnv+"=1", netnsguard.EnvRefuse+"=1", "NODE_NAME="+node)
	f, err := os.Create(p.log)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close() // the agent has its own copy
	p.cmd.Stderr = f
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		p.err = p.cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(30 * time.Second):
			_ = p.cmd.Process.Kill()
			<-p.done
		}
		if t.Failed() {
			t.Logf("agent log:\n%s", p.output())
		}
	})
	return p
}

// awaitAllowed waits until the agent's identity may (or may not) do verb on
// resource: the authorizer learns of an RBAC change shortly after it is
// written.
func (k *kubeHost) awaitAllowed(t *testing.T, verb, resource, sub string, want bool) {
	t.Helper()
	ssar := k.c.Client(t, kubetest.AgentUser).AuthorizationV1().SelfSubjectAccessReviews()
	await.Eventually(t, kubeWait, fmt.Sprintf("agent allowed %s %s/%s = %v", verb, resource, sub, want), func() error {
		r, err := ssar.Create(context.Background(), &authzv1.SelfSubjectAccessReview{Spec: authzv1.SelfSubjectAccessReviewSpec{
			ResourceAttributes: &authzv1.ResourceAttributes{Verb: verb, Resource: resource, Subresource: sub}}}, metav1.CreateOptions{})
		if err != nil {
			return err
		}
		if r.Status.Allowed != want {
			return fmt.Errorf("allowed %v", r.Status.Allowed)
		}
		return nil
	})
}

func (k *kubeHost) createNode(t *testing.T, name string, annotations map[string]string, cidrs ...string) {
	t.Helper()
	n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, Annotations: annotations}}
	if len(cidrs) > 0 {
		n.Spec.PodCIDR, n.Spec.PodCIDRs = cidrs[0], cidrs
	}
	if _, err := k.admin.CoreV1().Nodes().Create(context.Background(), n, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create Node %s: %v", name, err)
	}
}

// allocate sets a Node's pod CIDR as the controller manager's node IPAM
// controller does (--allocate-node-cidrs: a strategic merge patch of
// spec.podCIDR and spec.podCIDRs); the controller manager is not run.
func (k *kubeHost) allocate(t *testing.T, name string, cidrs ...string) {
	t.Helper()
	patch, _ := json.Marshal(map[string]any{"spec": map[string]any{"podCIDR": cidrs[0], "podCIDRs": cidrs}})
	if _, err := k.admin.CoreV1().Nodes().Patch(context.Background(), name, types.StrategicMergePatchType, patch, metav1.PatchOptions{}); err != nil {
		t.Fatalf("allocate %v to Node %s: %v", cidrs, name, err)
	}
}

// status asks the agent's status socket.
func (k *kubeHost) status() (*agent.Report, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return fetchReport(ctx, k.socket)
}

// TestKubeAgent: the agent in kube mode against a real API server waits
// for its Node's pod CIDR, holds it, writes the subnet file, publishes its
// lease in the Node's annotations as flannel does, programs a peer Node as
// vxlan route, neighbour and fdb entry, and drops it when the Node is
// deleted; with its RBAC rules narrowed, its status names the patch
// refused.
func TestKubeAgent(t *testing.T) {
	k := newKubeHost(t, kubeNetConf)
	// No pod CIDR yet: the agent serves its status, holds nothing, is
	// not ready.
	k.startOnNode(t, "node-a")
	if _, err := os.Stat(filepath.Join(k.dir, "subnet.env")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("subnet file before the Node has a pod CIDR: %v", err)
	}

	k.allocate(t, "node-a", "10.244.1.0/24")
	k.awaitLease(t, "10.244.1.0/24", "")
	k.checkSubnetFile(t, "FLANNEL_NETWORK=10.244.0.0/16", "FLANNEL_SUBNET=10.244.1.1/24", "FLANNEL_MTU=1450", "FLANNEL_IPMASQ=true")

	k.checkStatus(t)

	// The lease in the Node's annotations, in flannel's form.
	vtep := k.link(t, "flannel.1")
	node := k.node(t, "node-a")
	want := map[string]string{
		kubePrefix + "kube-subnet-manager": "true",
		kubePrefix + "backend-type":        "vxlan",
		kubePrefix + "public-ip":           "192.168.90.1",
	}
	for key, v := range want {
		if node.Annotations[key] != v {
			t.Errorf("annotation %s = %q, want %q (all: %v)", key, node.Annotations[key], v, node.Annotations)
		}
	}
	var data struct {
		VNI     int
		VtepMAC string
	}
	if err := json.Unmarshal([]byte(node.Annotations[kubePrefix+"backend-data"]), &data); err != nil || data.VNI != 1 || data.VtepMAC != vtep.Attrs().HardwareAddr.String() {
		t.Errorf("backend-data %q (%v), want VNI 1 and flannel.1's MAC %s", node.Annotations[kubePrefix+"backend-data"], err, vtep.Attrs().HardwareAddr)
	}

	// A peer Node, as a flannel host publishes it.
	const peerMAC = "3e:5b:b9:8d:d6:02"
	k.createNode(t, "node-b", peerAnnotations(peerMAC, "192.168.90.2"), "10.244.2.0/24")
	await.Eventually(t, kubeWait, "peer node-b programmed on flannel.1", func() error {
		return k.peerEntries(vtep, "10.244.2.0/24", peerMAC, "192.168.90.2", true)
	})

	if err := k.admin.CoreV1().Nodes().Delete(context.Background(), "node-b", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	await.Eventually(t, kubeWait, "peer node-b removed from flannel.1", func() error {
		return k.peerEntries(vtep, "10.244.2.0/24", peerMAC, "192.168.90.2", false)
	})

	// RBAC narrowed while the agent runs: the annotations removed from
	// its Node cannot be written back, and the status says why.
	k.c.GrantAgent(t, readNodesOnly)
	k.awaitAllowed(t, "patch", "nodes", "status", false)
	patch, _ := json.Marshal(map[string]any{"metadata": map[string]any{"annotations": map[string]any{kubePrefix + "backend-type": nil}}})
	if _, err := k.admin.CoreV1().Nodes().Patch(context.Background(), "node-a", types.MergePatchType, patch, metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
	await.Eventually(t, kubeWait, "status naming the refused patch of nodes/status", func() error {
		r, err := k.status()
		if err != nil {
			return err
		}
		for _, e := range r.RecentErrors {
			if strings.Contains(e.Message, "patch nodes/status node-a") && strings.Contains(e.Message, "forbidden") {
				if r.Store.Counters.PatchFailures == 0 {
					t.Fatalf("recent error %q without a patch failure counted", e.Message)
				}
				return nil
			}
		}
		return fmt.Errorf("recent errors %+v", r.RecentErrors)
	})
}

// readNodesOnly is the deployment's RBAC rules without the patch of
// nodes/status.
var readNodesOnly = rbacv1.PolicyRule{APIGroups: []string{""}, Resources: []string{"nodes"}, Verbs: []string{"get", "list", "watch"}}

// peerAnnotations are the annotations a flannel host publishes for a vxlan
// lease: its VTEP MAC and public address of each family (IPv4's first,
// then optionally IPv6's).
func peerAnnotations(macAndIPs ...string) map[string]string {
	a := map[string]string{
		kubePrefix + "kube-subnet-manager": "true",
		kubePrefix + "backend-type":        "vxlan",
		kubePrefix + "backend-data":        `{"VNI":1,"VtepMAC":"` + macAndIPs[0] + `"}`,
		kubePrefix + "public-ip":           macAndIPs[1],
	}
	if len(macAndIPs) == 4 {
		a[kubePrefix+"backend-v6-data"] = `{"VNI":1,"VtepMAC":"` + macAndIPs[2] + `"}`
		a[kubePrefix+"public-ipv6"] = macAndIPs[3]
	}
	return a
}

// startOnNode grants the agent the deployment's RBAC rules, registers its
// Node without a pod CIDR and starts the agent, and waits until its status
// answers, holding no lease and not ready.
func (k *kubeHost) startOnNode(t *testing.T, node string) {
	t.Helper()
	k.c.GrantAgent(t, kubetest.AgentRules...)
	k.awaitAllowed(t, "patch", "nodes", "status", true)
	k.createNode(t, node, nil)
	p := k.startAgent(t, node)
	await.Eventually(t, kubeWait, "agent status answering", func() error {
		if p.exited() {
			t.Fatalf("agent exited: %v", p.err)
		}
		r, err := k.status()
		if err != nil {
			return err
		}
		if r.Lease != nil || r.Ready {
			t.Fatalf("lease %+v ready %v before the Node has a pod CIDR", r.Lease, r.Ready)
		}
		return nil
	})
}

// awaitLease waits until the agent is ready holding the subnets v4 and v6
// ("" for none).
func (k *kubeHost) awaitLease(t *testing.T, v4, v6 string) {
	t.Helper()
	await.Eventually(t, kubeWait, "agent ready with lease "+strings.TrimSpace(v4+" "+v6), func() error {
		r, err := k.status()
		if err != nil {
			return err
		}
		if r.Lease == nil || r.Lease.Subnet != v4 || r.Lease.IPv6Subnet != v6 || !r.Ready {
			return fmt.Errorf("lease %+v ready %v", r.Lease, r.Ready)
		}
		return nil
	})
}

// link returns the host's link called name.
func (k *kubeHost) link(t *testing.T, name string) netlink.Link {
	t.Helper()
	l, err := k.h.LinkByName(name)
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	return l
}

// node returns the Node called name as the API server has it.
func (k *kubeHost) node(t *testing.T, name string) *corev1.Node {
	t.Helper()
	n, err := k.admin.CoreV1().Nodes().Get(context.Background(), name, metav1.GetOptions{})
	if err != nil {
		t.Fatalf("get Node %s: %v", name, err)
	}
	return n
}

// checkSubnetFile checks that the agent's subnet file has each of lines.
func (k *kubeHost) checkSubnetFile(t *testing.T, lines ...string) {
	t.Helper()
	env, err := os.ReadFile(filepath.Join(k.dir, "subnet.env"))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range lines {
		if !strings.Contains(string(env), line+"\n") {
			t.Errorf("subnet file lacks %s:\n%s", line, env)
		}
	}
}

// checkStatus checks what the status socket says of the store (JSON, text
// and metrics) once the agent holds its lease.
func (k *kubeHost) checkStatus(t *testing.T) {
	t.Helper()
	var r *agent.Report
	await.Eventually(t, kubeWait, "health check kube-apiserver passing", func() (err error) {
		if r, err = k.status(); err != nil {
			return err
		}
		for _, c := range r.Health {
			if c.Name == agent.CheckEtcd {
				t.Fatalf("health check %s in kube mode: %+v", agent.CheckEtcd, r.Health)
			}
			if c.Name == agent.CheckKubeAPI && c.OK {
				return nil
			}
		}
		return fmt.Errorf("health %+v", r.Health)
	})
	st := r.Store
	if st.Kind != agent.StoreKubernetes || st.KubeStoreReport == nil {
		t.Fatalf("status store %+v, want kind kubernetes", st)
	}
	ks := st.KubeStoreReport
	if ks.APIServer != k.c.URL || ks.Node != "node-a" || ks.AnnotationPrefix != "flannel.alpha.coreos.com" ||
		ks.NetConfigPath != k.netConf || !ks.Synced || ks.LastEvent == nil {
		t.Errorf("status store %+v, want API server %s, node-a, flannel's prefix, %s, synced, a last event", ks, k.c.URL, k.netConf)
	}
	if ks.Counters.Patches == 0 || ks.Counters.Events == 0 {
		t.Errorf("store counters %+v: no patch or no Node event counted", ks.Counters)
	}
	if len(r.Etcd.Endpoints) != 0 || r.Etcd.Prefix != "" {
		t.Errorf("etcd endpoints %v prefix %q in kube mode", r.Etcd.Endpoints, r.Etcd.Prefix)
	}
	var text strings.Builder
	printReport(&text, r)
	for _, want := range []string{"kubernetes " + k.c.URL + "  node node-a", "(the Nodes' pod CIDRs)"} {
		if !strings.Contains(text.String(), want) {
			t.Errorf("netagent status does not show %q:\n%s", want, text.String())
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://netagent/metrics", nil)
	resp, err := statusClient(k.socket).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	metrics, _ := io.ReadAll(resp.Body)
	for _, m := range []string{agent.MetricStoreInfo + `{kind="kubernetes"} 1`, agent.MetricKubeSynced + " 1"} {
		if !strings.Contains(string(metrics), m+"\n") {
			t.Errorf("metrics lack %s", m)
		}
	}
}

// peerEntries checks that the vxlan route, neighbour and fdb entry of a
// peer's subnet are all there (want) or all gone.
//
// Equivalent to: `ip route show SUBNET; ip neigh show dev flannel.1;
// bridge fdb show dev flannel.1` (flannel-v6.1 for IPv6).
func (k *kubeHost) peerEntries(vtep netlink.Link, subnet, mac, public string, want bool) error {
	gw := strings.Split(subnet, "/")[0]
	family := netlink.FAMILY_V4
	if strings.Contains(gw, ":") {
		family = netlink.FAMILY_V6
	}
	routes, err := k.h.RouteList(vtep, family)
	if err != nil {
		return err
	}
	route := false
	for _, r := range routes {
		if r.Dst != nil && r.Dst.String() == subnet && r.Gw.String() == gw {
			route = true
		}
	}
	neighs, err := k.h.NeighList(vtep.Attrs().Index, family)
	if err != nil {
		return err
	}
	neigh := false
	for _, n := range neighs {
		if n.IP.String() == gw && n.HardwareAddr.String() == mac {
			neigh = true
		}
	}
	fdbs, err := k.h.NeighList(vtep.Attrs().Index, syscall.AF_BRIDGE)
	if err != nil {
		return err
	}
	fdb := false
	for _, n := range fdbs {
		if n.HardwareAddr.String() == mac && n.IP.Equal(net.ParseIP(public)) {
			fdb = true
		}
	}
	if route != want || neigh != want || fdb != want {
		return fmt.Errorf("route %v, neighbour %v, fdb %v; want %v", route, neigh, fdb, want)
	}
	return nil
}

// TestKubeAgentForbidden: with RBAC rules narrower than the deployment's
// (no patch of nodes/status), the agent stops at start with an error that
// names the verb and resource it may not use.
func TestKubeAgentForbidden(t *testing.T) {
	k := newKubeHost(t, kubeNetConf)
	k.c.GrantAgent(t, readNodesOnly)
	k.awaitAllowed(t, "watch", "nodes", "", true)
	k.createNode(t, "node-a", nil, "10.244.1.0/24")
	p := k.startAgent(t, "node-a")
	select {
	case <-p.done:
	case <-time.After(kubeWait):
		t.Fatalf("the agent did not stop with too narrow RBAC rules:\n%s", p.output())
	}
	var exit *exec.ExitError
	if !errors.As(p.err, &exit) || exit.ExitCode() != 1 {
		t.Errorf("agent exited with %v, want exit status 1", p.err)
	}
	if msg := p.output(); !strings.Contains(msg, "patch nodes/status node-a") || !strings.Contains(msg, "forbidden") {
		t.Errorf("the agent's error does not name the verb and resource refused:\n%s", msg)
	}
}

// TestKubeAgentBadNetConf: a network config file that is missing or
// broken stops the agent at start with an error naming the file, before
// it asks the API server anything (none runs here).
func TestKubeAgentBadNetConf(t *testing.T) {
	ns := nstest.NewNS(t, "kconf")
	dir := t.TempDir()
	broken := filepath.Join(dir, "broken.json")
	if err := os.WriteFile(broken, []byte(`{"Network": "10.244.0.0/33"}`), 0o644); err != nil {
		t.Fatal(err)
	}
	k := &kubeHost{c: &kubetest.Cluster{NS: ns.Name}, dir: dir, socket: filepath.Join(dir, "status.sock"),
		apiArgs: []string{"--kube-api-url", "https://127.0.0.1:6443"}}
	for _, path := range []string{broken, filepath.Join(dir, "missing.json")} {
		k.netConf = path
		p := k.startAgent(t, "node-a")
		select {
		case <-p.done:
		case <-time.After(kubeWait):
			t.Fatalf("the agent did not stop with --net-config-path %s", path)
		}
		if msg := p.output(); p.err == nil || !strings.Contains(msg, path) {
			t.Errorf("--net-config-path %s: agent exited with %v, its error does not name the file:\n%s", path, p.err, msg)
		} else {
			t.Logf("%s", strings.TrimSpace(msg[strings.LastIndex(strings.TrimSpace(msg), "\n")+1:]))
		}
	}
}

// TestKubeAgentDualStack: on a dual-stack network the agent holds its
// Node's pod CIDR of each family, writes both in the subnet file, publishes the
// IPv6 public address and VTEP as flannel does, and programs a dual-stack
// peer Node on both vxlan devices.
func TestKubeAgentDualStack(t *testing.T) {
	k := newKubeHost(t, `{"Network": "10.244.0.0/16", "EnableIPv6": true, "IPv6Network": "fd00:244::/56", "Backend": {"Type": "vxlan"}}`)
	k.startOnNode(t, "node-a")
	k.allocate(t, "node-a", "10.244.1.0/24", "fd00:244:0:1::/64")
	k.awaitLease(t, "10.244.1.0/24", "fd00:244:0:1::/64")
	k.checkSubnetFile(t, "FLANNEL_SUBNET=10.244.1.1/24", "FLANNEL_IPV6_NETWORK=fd00:244::/56", "FLANNEL_IPV6_SUBNET=fd00:244:0:1::1/64")
	vtep6 := k.link(t, "flannel-v6.1")
	node := k.node(t, "node-a")
	if got := node.Annotations[kubePrefix+"public-ipv6"]; got != "fd90::1" {
		t.Errorf("annotation public-ipv6 = %q, want fd90::1", got)
	}
	if data := node.Annotations[kubePrefix+"backend-v6-data"]; !strings.Contains(data, vtep6.Attrs().HardwareAddr.String()) {
		t.Errorf("annotation backend-v6-data = %q, want flannel-v6.1's MAC %s", data, vtep6.Attrs().HardwareAddr)
	}

	const mac4, mac6 = "3e:5b:b9:8d:d6:02", "3e:5b:b9:8d:d6:62"
	k.createNode(t, "node-b", peerAnnotations(mac4, "192.168.90.2", mac6, "fd90::2"), "10.244.2.0/24", "fd00:244:0:2::/64")
	vtep := k.link(t, "flannel.1")
	await.Eventually(t, kubeWait, "peer node-b programmed on flannel.1 and flannel-v6.1", func() error {
		return errors.Join(k.peerEntries(vtep, "10.244.2.0/24", mac4, "192.168.90.2", true),
			k.peerEntries(vtep6, "fd00:244:0:2::/64", mac6, "fd90::2", true))
	})
}
