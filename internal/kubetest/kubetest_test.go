package kubetest

import (
	"context"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/netagent/netagent/internal/await"
)

// TestCluster starts an API server, checks both identities and their
// kubeconfigs, RBAC, and that objects survive a restart of the server.
func TestCluster(t *testing.T) {
	c := Start(t, Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	admin := c.Client(t, AdminUser)
	node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "kubetest-node"}}
	if _, err := admin.CoreV1().Nodes().Create(ctx, node, metav1.CreateOptions{}); err != nil {
		t.Fatalf("admin creates a Node: %v", err)
	}

	agent := c.Client(t, AgentUser)
	if _, err := agent.CoreV1().Nodes().List(ctx, metav1.ListOptions{}); !apierrors.IsForbidden(err) {
		t.Fatalf("agent lists Nodes before any grant: err %v, want Forbidden", err)
	}
	c.GrantAgent(t, AgentRules...)
	// RBAC's authorizer reads roles from an informer: the grant takes
	// effect shortly after it is written.
	var list *corev1.NodeList
	await.Eventually(t, time.Minute, "agent allowed to list Nodes", func() (err error) {
		list, err = agent.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
		return err
	})
	if len(list.Items) != 1 || list.Items[0].Name != node.Name {
		t.Fatalf("agent lists %d Nodes, want %s alone", len(list.Items), node.Name)
	}
	if _, err := agent.CoreV1().Pods("").List(ctx, metav1.ListOptions{}); !apierrors.IsForbidden(err) {
		t.Fatalf("agent lists Pods: err %v, want Forbidden (not granted)", err)
	}
	if err := agent.CoreV1().Nodes().Delete(ctx, node.Name, metav1.DeleteOptions{}); !apierrors.IsForbidden(err) {
		t.Fatalf("agent deletes a Node: err %v, want Forbidden (not granted)", err)
	}

	// The kubeconfig files name the server and the identities.
	for user, path := range map[string]string{AdminUser: c.AdminKubeconfig, AgentUser: c.AgentKubeconfig} {
		cfg, err := clientcmd.BuildConfigFromFlags("", path)
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		cfg.Dial = c.RESTConfig(t, user).Dial
		cs, err := kubernetes.NewForConfig(cfg)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := cs.CoreV1().Nodes().Get(ctx, node.Name, metav1.GetOptions{}); err != nil {
			t.Fatalf("%s (%s) gets the Node: %v", path, user, err)
		}
	}

	pid := c.PID()
	c.Restart(t)
	if c.PID() == pid {
		t.Fatalf("the API server kept PID %d over a restart", pid)
	}
	if _, err := admin.CoreV1().Nodes().Get(ctx, node.Name, metav1.GetOptions{}); err != nil {
		t.Fatalf("the Node after a restart of the API server: %v", err)
	}
}
