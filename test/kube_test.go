package test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"slices"
	"testing"
	"time"

	authv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/netagent/netagent/internal/await"
	"github.com/netagent/netagent/internal/kubetest"
	"github.com/netagent/netagent/internal/lab"
	"github.com/netagent/netagent/internal/lab/kubelab"
	"github.com/netagent/netagent/lease"
)

// End-to-end tests of the Kubernetes store: agents in kube mode
// (--kube-subnet-mgr) against a real kube-apiserver on a real etcd, run by
// internal/lab/kubelab in the lab's etcd namespace.

// kubeNetConf is every host's net-conf.json.
const kubeNetConf = `{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan"}}`

// annotationPrefix is flannel's, the agents' default.
const annotationPrefix = "flannel.alpha.coreos.com/"

// kubeCluster is a cluster whose agents keep their leases in the API
// server kube.
type kubeCluster struct {
	*cluster
	kube *kubelab.Cluster
}

// newKubeCluster builds a lab of n hosts with an API server, a Node per
// host with its pod CIDR, and each host's kubeconfig and net-conf.json;
// startAgent then starts agents in kube mode.
func newKubeCluster(t *testing.T, n int) *kubeCluster {
	t.Helper()
	c := newBareCluster(t, clusterOptions{Hosts: n, StoreArgs: kubelab.AgentArgs, Env: kubelab.AgentEnv})
	start := time.Now()
	kc, err := kubelab.Start(c.ctx, c.lab, kubelab.Options{Binaries: kubetest.Build(t), NetConf: []byte(kubeNetConf)})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("kube-apiserver and %d Nodes up in %v", n, time.Since(start).Round(10*time.Millisecond))
	return &kubeCluster{cluster: c, kube: kc}
}

// nodeLeases reads every Node's lease from its annotations, as subnet ->
// peer (public IP and VTEP MAC), and skips Nodes without one.
func (k *kubeCluster) nodeLeases() map[netip.Prefix]fakePeer {
	k.t.Helper()
	ctx, cancel := context.WithTimeout(k.ctx, time.Minute)
	defer cancel()
	list, err := k.kube.Admin().CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil {
		k.t.Fatalf("list Nodes: %v", err)
	}
	out := map[netip.Prefix]fakePeer{}
	for _, n := range list.Items {
		a := n.Annotations
		if a[annotationPrefix+"kube-subnet-manager"] != "true" {
			continue
		}
		sn, err := netip.ParsePrefix(n.Spec.PodCIDR)
		if err != nil {
			continue
		}
		var bd struct{ VtepMAC string }
		_ = json.Unmarshal([]byte(a[annotationPrefix+"backend-data"]), &bd)
		ip, _ := netip.ParseAddr(a[annotationPrefix+"public-ip"])
		out[sn] = fakePeer{Subnet: sn, PublicIP: ip, MAC: bd.VtepMAC}
	}
	return out
}

// patchNode sends a JSON merge patch to the Node as an administrator.
func (k *kubeCluster) patchNode(name string, patch any) {
	k.t.Helper()
	b, err := json.Marshal(patch)
	if err != nil {
		k.t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(k.ctx, time.Minute)
	defer cancel()
	if _, err := k.kube.Admin().CoreV1().Nodes().Patch(ctx, name, types.MergePatchType, b, metav1.PatchOptions{}); err != nil {
		k.t.Fatalf("patch Node %s: %v", name, err)
	}
}

// kubeStatus is the "store" object of an agent's status in kube mode.
type kubeStatus struct {
	Kind     string `json:"kind"`
	Node     string `json:"node"`
	Synced   bool   `json:"synced"`
	Counters struct {
		Events uint64 `json:"events"`
	} `json:"counters"`
}

// storeStatus reads h's agent's status and returns its store.
func (k *kubeCluster) storeStatus(h *lab.Host) (kubeStatus, error) {
	out, err := k.exec(h.NS, binaries(k.t)["./cmd/netagent"], "status", "--json", "--status-socket="+statusSocket(h))
	if err != nil {
		return kubeStatus{}, err
	}
	var r struct {
		Store *kubeStatus `json:"store"`
	}
	if err := json.Unmarshal(out, &r); err != nil {
		return kubeStatus{}, err
	}
	if r.Store == nil {
		return kubeStatus{}, fmt.Errorf("the status has no store: %s", out)
	}
	return *r.Store, nil
}

// awaitPeers waits until each of hosts has programmed exactly the leases
// of the others among leases.
func (k *kubeCluster) awaitPeers(hosts []*lab.Host, leases map[netip.Prefix]fakePeer, what string) {
	k.t.Helper()
	for _, h := range hosts {
		own := k.awaitSubnetFile(h).Subnet
		awaitKernelPeers(k.t, k.handle(h.NS), wantKernelPeers(peersOf(leases, own)), 2*time.Minute, h.Name+": "+what)
	}
}

// narrowKubeconfig writes h's kubeconfig for a ServiceAccount bound to the
// shipped ClusterRole's rules minus the patch of nodes/status.
func (k *kubeCluster) narrowKubeconfig(h *lab.Host) {
	k.t.Helper()
	ctx, cancel := context.WithTimeout(k.ctx, time.Minute)
	defer cancel()
	rules, err := kubelab.AgentRules()
	if err != nil {
		k.t.Fatal(err)
	}
	rules = slices.DeleteFunc(rules, func(r rbacv1.PolicyRule) bool { return slices.Contains(r.Resources, "nodes/status") })
	const name, ns = "netagent-narrow", "kube-system"
	admin := k.kube.Admin()
	sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns}}
	role := &rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: name}, Rules: rules}
	binding := &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: name},
		Subjects:   []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Name: name, Namespace: ns}},
	}
	if _, err := admin.CoreV1().ServiceAccounts(ns).Create(ctx, sa, metav1.CreateOptions{}); err != nil {
		k.t.Fatal(err)
	}
	if _, err := admin.RbacV1().ClusterRoles().Create(ctx, role, metav1.CreateOptions{}); err != nil {
		k.t.Fatal(err)
	}
	if _, err := admin.RbacV1().ClusterRoleBindings().Create(ctx, binding, metav1.CreateOptions{}); err != nil {
		k.t.Fatal(err)
	}
	tr, err := admin.CoreV1().ServiceAccounts(ns).CreateToken(ctx, name, &authv1.TokenRequest{}, metav1.CreateOptions{})
	if err != nil {
		k.t.Fatalf("token of %s: %v", name, err)
	}
	if err := kubelab.WriteKubeconfig(kubelab.Kubeconfig(h), k.kube.URL, k.kube.CAPEM(), name, tr.Status.Token); err != nil {
		k.t.Fatal(err)
	}
}

// TestKube runs three agents in kube mode on a lab of five hosts: h4 has
// no agent (its Node gets a flannel node's annotations by hand), and h5's
// agent has an identity without the patch of nodes/status. It checks the
// ping matrix, that an API server restart loses no ping and the agents
// watch again after it, a flannel-form Node programmed as a peer, that a
// Node's annotations removed or the Node deleted makes the others drop it,
// and that h5's agent names what it may not do while the others work.
func TestKube(t *testing.T) {
	k := newKubeCluster(t, 5)
	hosts := k.hosts()
	agents, flannelHost, narrowHost := hosts[:3], hosts[3], hosts[4]
	k.narrowKubeconfig(narrowHost)
	for _, h := range append(slices.Clone(agents), narrowHost) {
		k.startAgent(h)
	}

	// Every agent leases its Node's pod CIDR, allocated in host order.
	cfg, err := lease.ParseConfig([]byte(kubeNetConf))
	if err != nil {
		t.Fatal(err)
	}
	for i, h := range agents {
		want, err := kubelab.AllocatePodCIDRs(cfg, i)
		if err != nil {
			t.Fatal(err)
		}
		if got := k.awaitSubnetFile(h).Subnet; got != want[0] {
			t.Errorf("%s leases %s, want its Node's pod CIDR %s", h.Name, got, want[0])
		}
		await.Eventually(t, time.Minute, h.Name+" ready", func() error { return statusReady(k.cluster, h) })
	}
	leases := k.nodeLeases()
	if len(leases) != len(agents) {
		t.Fatalf("%d Nodes with a lease, want %d: %v", len(leases), len(agents), leases)
	}
	k.awaitPeers(agents, leases, "the other agents' Nodes programmed")
	var ctns []*container
	for _, h := range agents {
		ctns = append(ctns, k.addContainer(h))
	}
	k.pingMatrix(ctns)

	t.Run("too narrow RBAC", func(t *testing.T) {
		// Open asks the API server what it may do and exits naming what
		// it may not.
		p := k.agent(narrowHost)
		ctx, cancel := context.WithTimeout(k.ctx, 2*time.Minute)
		defer cancel()
		if err := p.Wait(ctx); err == nil {
			t.Fatalf("%s's agent exited with status 0", narrowHost.Name)
		}
		if err := logContains(p, "patch nodes/status "+narrowHost.Name); err != nil {
			t.Errorf("%s's agent: %v", narrowHost.Name, err)
		}
	})

	t.Run("API server restart", func(t *testing.T) {
		before := map[string]uint64{}
		for _, h := range agents {
			st, err := k.storeStatus(h)
			if err != nil {
				t.Fatal(err)
			}
			if st.Kind != "kubernetes" || st.Node != h.Name || !st.Synced {
				t.Fatalf("%s's store before the restart: %+v", h.Name, st)
			}
			before[h.Name] = st.Counters.Events
		}
		ping := startPing(t, ctns[0].NS, ctns[1].IP, 100*time.Millisecond, 1200)
		start := time.Now()
		if err := k.kube.StopAPIServer(); err != nil {
			t.Fatal(err)
		}
		stopped := time.Now()
		if err := k.kube.StartAPIServer(k.ctx); err != nil {
			t.Fatal(err)
		}
		t.Logf("API server stopped in %v, started and ready in %v", stopped.Sub(start).Round(10*time.Millisecond), time.Since(stopped).Round(10*time.Millisecond))
		// The watch is back when a change made after the restart reaches
		// every agent: a flannel node's annotations, written by hand.
		mac := "0a:58:0a:f4:03:00"
		k.patchNode(flannelHost.Name, map[string]any{"metadata": map[string]any{"annotations": map[string]string{
			annotationPrefix + "backend-type":        "vxlan",
			annotationPrefix + "backend-data":        `{"VNI":1,"VtepMAC":"` + mac + `"}`,
			annotationPrefix + "public-ip":           flannelHost.Underlay.Addr().String(),
			annotationPrefix + "kube-subnet-manager": "true",
		}}})
		withFlannel := k.nodeLeases()
		if len(withFlannel) != len(agents)+1 {
			t.Fatalf("%d Nodes with a lease after the flannel node's, want %d", len(withFlannel), len(agents)+1)
		}
		k.awaitPeers(agents, withFlannel, "the flannel node programmed after the API server restart")
		for _, h := range agents {
			await.Eventually(t, time.Minute, h.Name+"'s informer synced with events after the restart", func() error {
				st, err := k.storeStatus(h)
				if err != nil {
					return err
				}
				if !st.Synced || st.Counters.Events <= before[h.Name] {
					return fmt.Errorf("store %+v, events before the restart %d", st, before[h.Name])
				}
				return nil
			})
		}
		ping.stop()
		r := ping.wait(t)
		t.Logf("ping across the API server restart: %d sent, %d received, lost %v", r.sent, r.received, r.lost)
		if len(r.lost) > 0 || r.sent == 0 {
			t.Errorf("ping across the API server restart lost %v of %d", r.lost, r.sent)
		}
	})

	t.Run("annotations removed", func(t *testing.T) {
		k.patchNode(flannelHost.Name, map[string]any{"metadata": map[string]any{"annotations": map[string]any{
			annotationPrefix + "backend-type":        nil,
			annotationPrefix + "backend-data":        nil,
			annotationPrefix + "public-ip":           nil,
			annotationPrefix + "kube-subnet-manager": nil,
		}}})
		k.awaitPeers(agents, leases, "the flannel node dropped once its annotations are gone")
	})

	t.Run("Node deleted", func(t *testing.T) {
		gone := agents[2]
		ctx, cancel := context.WithTimeout(k.ctx, time.Minute)
		defer cancel()
		if err := k.kube.Admin().CoreV1().Nodes().Delete(ctx, gone.Name, metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
		rest := map[netip.Prefix]fakePeer{}
		for sn, p := range leases {
			if p.PublicIP != gone.Underlay.Addr() {
				rest[sn] = p
			}
		}
		k.awaitPeers(agents[:2], rest, gone.Name+" dropped once its Node is deleted")
		k.pingMatrix(ctns[:2])
	})
}
