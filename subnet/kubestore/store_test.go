package kubestore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"

	"github.com/netagent/netagent/internal/await"
	"github.com/netagent/netagent/internal/kubetest"
	"github.com/netagent/netagent/lease"
	"github.com/netagent/netagent/subnet"
)

// wait bounds every wait on the API server: it only bounds a hang.
const wait = 2 * time.Minute

const netConf = `{"Network": "10.244.0.0/16", "Backend": {"Type": "vxlan"}}`

const prefix = "flannel.alpha.coreos.com/"

// flannelAnnotations are the annotations flannel writes for a vxlan lease
// of a host whose public address is ip.
func flannelAnnotations(ip, mac string) map[string]string {
	return map[string]string{
		prefix + "kube-subnet-manager": "true",
		prefix + "backend-type":        "vxlan",
		prefix + "backend-data":        fmt.Sprintf(`{"VNI":1,"VtepMAC":"%s"}`, mac),
		prefix + "public-ip":           ip,
	}
}

// env is a real API server with the agent's identity granted the
// deployment's rules, an administrator client, and a net-conf.json file.
type env struct {
	c       *kubetest.Cluster
	admin   kubernetes.Interface
	netConf string
}

func newEnv(t *testing.T) *env {
	t.Helper()
	c := kubetest.Start(t, kubetest.Options{})
	c.GrantAgent(t, kubetest.AgentRules...)
	path := filepath.Join(t.TempDir(), "net-conf.json")
	if err := os.WriteFile(path, []byte(netConf), 0o644); err != nil {
		t.Fatal(err)
	}
	return &env{c: c, admin: c.Client(t, kubetest.AdminUser), netConf: path}
}

// open opens a Store for node as the agent, once the RBAC grant is in
// force (the authorizer learns of it shortly after it is written).
func (e *env) open(t *testing.T, node string) *Store {
	t.Helper()
	return e.openWith(t, Options{NodeName: node})
}

// openWith is open with the options given (the config file the env's).
func (e *env) openWith(t *testing.T, opts Options) *Store {
	t.Helper()
	opts.NetConfigPath = e.netConf
	var s *Store
	await.Eventually(t, wait, "store opened with the agent's permissions", func() (err error) {
		s, err = Open(context.Background(), e.c.RESTConfig(t, kubetest.AgentUser), opts)
		return err
	})
	t.Cleanup(func() { s.Close() })
	return s
}

// createNode registers a Node as the kubelet would, with the annotations
// given and pod CIDRs when given.
func (e *env) createNode(t *testing.T, name string, annotations map[string]string, cidrs ...string) {
	t.Helper()
	n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, Annotations: annotations}, Spec: corev1.NodeSpec{PodCIDRs: cidrs}}
	if len(cidrs) > 0 {
		n.Spec.PodCIDR = cidrs[0]
	}
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	if _, err := e.admin.CoreV1().Nodes().Create(ctx, n, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create Node %s: %v", name, err)
	}
}

// allocate sets a Node's pod CIDRs as the controller manager's node IPAM
// controller does (--allocate-node-cidrs: a strategic merge patch of
// spec.podCIDR and spec.podCIDRs, see
// k8s.io/component-helpers/node/util.PatchNodeCIDRs).
func (e *env) allocate(t *testing.T, name string, cidrs ...string) {
	t.Helper()
	patch, _ := json.Marshal(map[string]any{"spec": map[string]any{"podCIDR": cidrs[0], "podCIDRs": cidrs}})
	e.patch(t, name, types.StrategicMergePatchType, patch)
}

// annotate sets (or, for an empty value, removes) annotations of a Node.
func (e *env) annotate(t *testing.T, name string, annotations map[string]string) {
	t.Helper()
	m := make(map[string]any, len(annotations))
	for k, v := range annotations {
		m[k] = v
		if v == "" {
			m[k] = nil
		}
	}
	patch, _ := json.Marshal(map[string]any{"metadata": map[string]any{"annotations": m}})
	e.patch(t, name, types.MergePatchType, patch)
}

// patch patches a Node (its subresource when one is given: "status").
func (e *env) patch(t *testing.T, name string, pt types.PatchType, patch []byte, subresource ...string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	if _, err := e.admin.CoreV1().Nodes().Patch(ctx, name, pt, patch, metav1.PatchOptions{}, subresource...); err != nil {
		t.Fatalf("patch Node %s with %s: %v", name, patch, err)
	}
}

func (e *env) node(t *testing.T, name string) *corev1.Node {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	n, err := e.admin.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		t.Fatalf("get Node %s: %v", name, err)
	}
	return n
}

// receiver applies a lease watch's batches as the agent does, keeping the
// leases by key and every event received.
type receiver struct {
	mu     sync.Mutex
	leases map[string]lease.Lease
	events []lease.Event
	first  *lease.Batch
}

func receive(ch <-chan lease.Batch) *receiver {
	r := &receiver{leases: make(map[string]lease.Lease)}
	go func() {
		for b := range ch {
			r.mu.Lock()
			if b.Snapshot {
				if r.first == nil {
					r.first = &b
				}
				clear(r.leases)
			}
			for _, ev := range b.Events {
				r.events = append(r.events, ev)
				if ev.Type == lease.EventRemoved {
					delete(r.leases, ev.Lease.Key())
				} else {
					r.leases[ev.Lease.Key()] = ev.Lease
				}
			}
			r.mu.Unlock()
		}
	}()
	return r
}

// has returns nil once the receiver holds exactly the leases keyed
// keys, each with the public IP given.
func (r *receiver) has(want map[string]string) func() error {
	return func() error {
		r.mu.Lock()
		defer r.mu.Unlock()
		got := make(map[string]string, len(r.leases))
		for k, l := range r.leases {
			got[k] = l.Attrs.PublicIP.String()
		}
		if !reflect.DeepEqual(got, want) {
			return fmt.Errorf("leases %v, want %v", got, want)
		}
		return nil
	}
}

// removed counts the removal events received so far.
func (r *receiver) removed() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, ev := range r.events {
		if ev.Type == lease.EventRemoved {
			n++
		}
	}
	return n
}

// TestStore runs a Store against a real API server through a host's life:
// its Node registered without a pod CIDR, the CIDR allocated, the lease
// published in flannel's form (and not patched again when unchanged), a
// flannel peer seen, peers' annotations removed and Nodes deleted, the API
// server restarted, and the host's own annotations removed by someone else.
func TestStore(t *testing.T) {
	e := newEnv(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	// A flannel host, already running.
	e.createNode(t, "flannel-b", flannelAnnotations("192.168.77.2", "3e:5b:b9:8d:d6:02"), "10.244.2.0/24")
	// This host: registered by its kubelet, no pod CIDR yet.
	e.createNode(t, "host-a", nil)
	s := e.open(t, "host-a")
	r := receive(s.WatchLeases(ctx))

	await.Eventually(t, wait, "the flannel peer's lease in the first batch", r.has(map[string]string{"10.244.2.0-24": "192.168.77.2"}))
	r.mu.Lock()
	first := r.first
	r.mu.Unlock()
	if first == nil || len(first.Events) != 1 || first.Revision == 0 {
		t.Fatalf("first batch %+v, want a Snapshot of the one lease, with a revision", first)
	}
	info := s.Info()
	wantInfo := Info{APIServer: e.c.URL, Node: "host-a", AnnotationPrefix: DefaultAnnotationPrefix, NetConfigPath: e.netConf, Synced: true}
	if info.LastEvent.IsZero() || info.Counters.Events < 2 {
		t.Fatalf("Info %+v after the informer listed two Nodes, want a last event and at least 2 events", info)
	}
	lastEvent, events := info.LastEvent, info.Counters.Events
	info.LastEvent, info.Counters = time.Time{}, InfoCounters{Events: info.Counters.Events}
	if wantInfo.Counters.Events = info.Counters.Events; info != wantInfo {
		t.Fatalf("Info\n%+v\nwant\n%+v", info, wantInfo)
	}

	attrs := lease.LeaseAttrs{PublicIP: netip.MustParseAddr("192.168.77.1"), BackendType: "vxlan",
		BackendData: json.RawMessage(`{"VNI":1,"VtepMAC":"3e:5b:b9:8d:d6:01"}`)}
	type held struct {
		h   *Holder
		err error
	}
	holdDone := make(chan held, 1)
	go func() {
		h, err := s.Hold(ctx, s.Config(), subnet.AcquireOptions{Attrs: attrs})
		holdDone <- held{h, err}
	}()
	// Hold waits for the pod CIDR; the controller manager allocates it.
	e.allocate(t, "host-a", "10.244.1.0/24")
	var res held
	select {
	case res = <-holdDone:
	case <-time.After(wait):
		t.Fatal("Hold did not return after the pod CIDR was allocated")
	}
	if res.err != nil {
		t.Fatalf("Hold: %v", res.err)
	}
	h := res.h
	defer h.Close()
	if got := h.Lease(); got.Subnet != netip.MustParsePrefix("10.244.1.0/24") || got.Attrs.PublicIP != attrs.PublicIP {
		t.Fatalf("held lease %+v, want 10.244.1.0/24 of 192.168.77.1", got)
	}
	wantAnn := flannelAnnotations("192.168.77.1", "3e:5b:b9:8d:d6:01")
	if got := e.node(t, "host-a").Annotations; !reflect.DeepEqual(got, wantAnn) {
		t.Fatalf("host-a's annotations\n%v\nwant flannel's\n%v", got, wantAnn)
	}
	if st := s.Stats(); st.Renewals != 1 {
		t.Fatalf("%d annotation patches, want 1", st.Renewals)
	}
	// The same patch cleared NetworkUnavailable, as flanneld does at start.
	if cond := networkCondition(e.node(t, "host-a")); cond == nil || cond.Status != corev1.ConditionFalse || cond.Reason != conditionReason {
		t.Fatalf("host-a's NetworkUnavailable condition %+v, want False, reason %s", cond, conditionReason)
	}
	if info := s.Info(); info.Counters.Patches != 1 || info.Counters.Events <= events || !info.LastEvent.After(lastEvent) {
		t.Fatalf("Info %+v after the pod CIDR and the patch, want 1 patch, more than %d events, an event after %v", info, events, lastEvent)
	}
	await.Eventually(t, wait, "this host's and the peer's leases", r.has(map[string]string{
		"10.244.1.0-24": "192.168.77.1", "10.244.2.0-24": "192.168.77.2"}))

	// A second Holder (an agent restarted) finds the annotations as it
	// would write them: no patch.
	h2, err := s.Hold(ctx, s.Config(), subnet.AcquireOptions{Attrs: attrs})
	if err != nil {
		t.Fatalf("second Hold: %v", err)
	}
	h2.Close()
	if st := s.Stats(); st.Renewals != 1 {
		t.Fatalf("%d annotation patches after holding the same lease again, want still 1", st.Renewals)
	}

	// The peer's annotations removed: its lease is gone; back: it returns.
	e.annotate(t, "flannel-b", map[string]string{prefix + "kube-subnet-manager": ""})
	await.Eventually(t, wait, "the peer's lease removed with its annotation", r.has(map[string]string{"10.244.1.0-24": "192.168.77.1"}))
	e.annotate(t, "flannel-b", map[string]string{prefix + "kube-subnet-manager": "true"})
	await.Eventually(t, wait, "the peer's lease back with its annotation", r.has(map[string]string{
		"10.244.1.0-24": "192.168.77.1", "10.244.2.0-24": "192.168.77.2"}))

	// The peer's Node deleted: its lease is gone.
	if err := e.admin.CoreV1().Nodes().Delete(ctx, "flannel-b", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	await.Eventually(t, wait, "the peer's lease removed with its Node", r.has(map[string]string{"10.244.1.0-24": "192.168.77.1"}))
	removals := r.removed()

	// The API server restarts: the informer lists again, and nothing that
	// did not change is delivered as removed (or at all).
	e.c.Restart(t)
	e.createNode(t, "flannel-c", flannelAnnotations("192.168.77.3", "3e:5b:b9:8d:d6:03"), "10.244.3.0/24")
	await.Eventually(t, wait, "a new peer's lease after the API server restarted", r.has(map[string]string{
		"10.244.1.0-24": "192.168.77.1", "10.244.3.0-24": "192.168.77.3"}))
	if got := r.removed(); got != removals {
		t.Fatalf("%d removals after the API server restarted, want none", got-removals)
	}

	// Someone removes this host's annotations: the Holder writes them
	// back.
	e.annotate(t, "host-a", map[string]string{prefix + "public-ip": "", prefix + "backend-data": ""})
	await.Eventually(t, wait, "this host's annotations restored", await.True(func() bool { return s.Stats().LeaseRestores > 0 }))
	if got := e.node(t, "host-a").Annotations; !reflect.DeepEqual(got, wantAnn) {
		t.Fatalf("host-a's annotations after the restore\n%v\nwant\n%v", got, wantAnn)
	}
	if st := s.Stats(); st.LeaseRestores != 1 {
		t.Fatalf("%d restores, want 1", st.LeaseRestores)
	}
	if c := s.Info().Counters; c.Restores != 1 || c.Patches != 2 || c.PatchFailures != 0 {
		t.Fatalf("Info counters %+v at the end, want 1 restore, 2 patches, no failure", c)
	}
}

// TestStoreForbidden checks that an identity without the deployment's
// permissions gets an error naming what it may not do.
func TestStoreForbidden(t *testing.T) {
	e := newEnv(t)
	// Everything but the patch of the Node's status.
	e.c.GrantAgent(t, kubetest.AgentRules[0])
	await.Eventually(t, wait, "Open refused for the missing patch of nodes/status", func() error {
		_, err := Open(context.Background(), e.c.RESTConfig(t, kubetest.AgentUser), Options{NodeName: "host-a", NetConfigPath: e.netConf})
		if !errors.Is(err, ErrForbidden) || !strings.Contains(err.Error(), "patch nodes/status host-a") {
			return fmt.Errorf("Open: err %v", err)
		}
		return nil
	})
}

// networkCondition is n's NetworkUnavailable condition, nil without one.
func networkCondition(n *corev1.Node) *corev1.NodeCondition {
	for i, c := range n.Status.Conditions {
		if c.Type == corev1.NodeNetworkUnavailable {
			return &n.Status.Conditions[i]
		}
	}
	return nil
}

// TestNetworkUnavailable: a Node registered with NetworkUnavailable true
// (as some cloud controllers do) has it set false once the lease is
// published; with LeaveNetworkUnavailable (flanneld's
// --set-node-network-unavailable=false) it is left as it is.
func TestNetworkUnavailable(t *testing.T) {
	e := newEnv(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	attrs := lease.LeaseAttrs{PublicIP: netip.MustParseAddr("192.168.77.1"), BackendType: "vxlan",
		BackendData: json.RawMessage(`{"VNI":1,"VtepMAC":"3e:5b:b9:8d:d6:01"}`)}
	for i, tc := range []struct {
		node  string
		leave bool
		want  corev1.ConditionStatus
	}{{"set", false, corev1.ConditionFalse}, {"left", true, corev1.ConditionTrue}} {
		e.createNode(t, tc.node, nil, fmt.Sprintf("10.244.%d.0/24", i+1))
		unavailable, _ := json.Marshal(map[string]any{"status": map[string]any{"conditions": []corev1.NodeCondition{{
			Type: corev1.NodeNetworkUnavailable, Status: corev1.ConditionTrue, Reason: "NoRouteCreated"}}}})
		e.patch(t, tc.node, types.StrategicMergePatchType, unavailable, "status")
		s := e.openWith(t, Options{NodeName: tc.node, LeaveNetworkUnavailable: tc.leave})
		attrs.PublicIP = netip.AddrFrom4([4]byte{192, 168, 77, byte(i + 1)})
		h, err := s.Hold(ctx, s.Config(), subnet.AcquireOptions{Attrs: attrs})
		if err != nil {
			t.Fatalf("%s: Hold: %v", tc.node, err)
		}
		defer h.Close()
		if cond := networkCondition(e.node(t, tc.node)); cond == nil || cond.Status != tc.want {
			t.Errorf("%s (leave %t): NetworkUnavailable %+v after the lease, want %s", tc.node, tc.leave, cond, tc.want)
		}
	}
}
