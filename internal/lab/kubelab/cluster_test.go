package kubelab

import (
	"context"
	"net"
	"net/netip"
	"os"
	"slices"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/netagent/netagent/internal/lab"
	"github.com/netagent/netagent/lease"
)

// TestStart runs the API server on a dual-stack lab of two hosts and
// checks what the hosts' agents will find: their Nodes with addresses and
// pod CIDRs, their net-conf.json, and a kubeconfig that reaches the server
// from the host with the shipped RBAC (and no more); then a restart.
func TestStart(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: the lab makes network namespaces")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	bins, err := Build(ctx)
	if err != nil {
		t.Fatal(err)
	}
	l, err := lab.New(ctx, lab.Options{Hosts: 2, IPv6: lab.DualStack})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := l.Close(); err != nil {
			t.Errorf("lab close: %v", err)
		}
	})
	netConf := []byte(`{"Network":"10.5.0.0/16","EnableIPv6":true,"IPv6Network":"fd00:5::/48","Backend":{"Type":"vxlan"}}`)
	c, err := Start(ctx, l, Options{Binaries: bins, NetConf: netConf})
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := lease.ParseConfig(netConf)
	if err != nil {
		t.Fatal(err)
	}
	for i, h := range l.Hosts() {
		n, err := c.Admin().CoreV1().Nodes().Get(ctx, h.Name, metav1.GetOptions{})
		if err != nil {
			t.Fatalf("Node %s: %v", h.Name, err)
		}
		want, _ := AllocatePodCIDRs(cfg, i)
		if got := n.Spec.PodCIDRs; len(got) != 2 || got[0] != want[0].String() || got[1] != want[1].String() || n.Spec.PodCIDR != got[0] {
			t.Errorf("Node %s: podCIDR %s podCIDRs %v, want %v", h.Name, n.Spec.PodCIDR, got, want)
		}
		var addrs []string
		for _, a := range n.Status.Addresses {
			addrs = append(addrs, string(a.Type)+" "+a.Address)
		}
		for _, want := range []string{"InternalIP " + h.Underlay.Addr().String(), "InternalIP " + h.UnderlayV6.Addr().String()} {
			if !slices.Contains(addrs, want) {
				t.Errorf("Node %s: addresses %v lack %s", h.Name, addrs, want)
			}
		}
		if b, err := os.ReadFile(NetConfPath(h)); err != nil || string(b) != string(netConf) {
			t.Errorf("%s: %s holds %q (%v), want the network config", h.Name, NetConfPath(h), b, err)
		}
	}

	// The agent's kubeconfig, used from h1 as its agent would.
	h := l.Hosts()[0]
	rc, err := clientcmd.BuildConfigFromFlags("", Kubeconfig(h))
	if err != nil {
		t.Fatal(err)
	}
	rc.Dial = func(ctx context.Context, network, addr string) (net.Conn, error) {
		return lab.DialInNS(ctx, h.NS, network, addr)
	}
	agent, err := kubernetes.NewForConfig(rc)
	if err != nil {
		t.Fatal(err)
	}
	list, err := agent.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil || len(list.Items) != 2 {
		t.Fatalf("the agent lists Nodes: %v (%d Nodes, want 2)", err, len(list.Items))
	}
	patch := []byte(`{"metadata":{"annotations":{"flannel.alpha.coreos.com/public-ip":"` + h.Underlay.Addr().String() + `"}}}`)
	if _, err := agent.CoreV1().Nodes().Patch(ctx, h.Name, types.MergePatchType, patch, metav1.PatchOptions{}, "status"); err != nil {
		t.Errorf("the agent patches its Node's status: %v", err)
	}
	if err := agent.CoreV1().Nodes().Delete(ctx, h.Name, metav1.DeleteOptions{}); !apierrors.IsForbidden(err) {
		t.Errorf("the agent deletes a Node: %v, want Forbidden", err)
	}

	pid := c.APIServer().PID()
	if err := c.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	if c.APIServer().PID() == pid {
		t.Fatalf("the API server kept pid %d over a restart", pid)
	}
	n, err := agent.CoreV1().Nodes().Get(ctx, h.Name, metav1.GetOptions{})
	if err != nil {
		t.Fatalf("the Node after a restart: %v", err)
	}
	if got := n.Annotations["flannel.alpha.coreos.com/public-ip"]; netip.MustParseAddr(got) != h.Underlay.Addr() {
		t.Errorf("the annotation after a restart: %q", got)
	}
	dir := c.Dir
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("%s after the lab's Close: %v, want it removed", dir, err)
	}
}
