// Package kubetest runs a real Kubernetes API server on a real etcd for
// tests: both are processes inside a network namespace made for the test,
// listening on an address of that namespace, and every client the package
// hands out connects from inside it (no packet leaves the initial
// namespace). The binaries come from scripts/kube-binaries.sh (see Build).
//
// A Cluster has two identities, each with a bearer token and a kubeconfig
// file: an administrator (group system:masters) and the agent ("netagent",
// no permission until GrantAgent gives it some), to check that the agent
// works with the RBAC rules it is deployed with and fails clearly with
// fewer.
package kubetest

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/netagent/netagent/internal/await"
	"github.com/netagent/netagent/internal/lab"
	"github.com/netagent/netagent/internal/lab/kubelab"
	"github.com/netagent/netagent/internal/nstest"
)

// Identities of a Cluster.
const (
	// AdminUser is in group system:masters: allowed everything.
	AdminUser = kubelab.AdminUser
	// AgentUser is the agent's identity: allowed nothing until GrantAgent.
	AgentUser = kubelab.AgentUser
)

// AgentRules are the permissions the agent needs: read and watch Nodes,
// patch their status (which carries the annotations). They are the rules
// of dist/kubernetes' ClusterRole.
var AgentRules = []rbacv1.PolicyRule{
	{APIGroups: []string{""}, Resources: []string{"nodes"}, Verbs: []string{"get", "list", "watch"}},
	{APIGroups: []string{""}, Resources: []string{"nodes/status"}, Verbs: []string{"patch"}},
}

// Ports inside the cluster's namespace.
const (
	APIServerPort  = kubelab.APIServerPort
	etcdClientPort = 2379
	etcdPeerPort   = 2380
)

// readyTimeout bounds the wait for the API server to be ready: it only
// bounds a hang (a start takes seconds, longer on a loaded machine).
const readyTimeout = 3 * time.Minute

// Options adjust a Cluster.
type Options struct {
	// NS is the namespace to run in; a new one (removed at the end of
	// the test) when empty.
	NS string
	// Addr is the API server's address in NS (127.0.0.1 when invalid);
	// it must be assigned there.
	Addr netip.Addr
}

// Cluster is an etcd and a kube-apiserver running in a namespace.
type Cluster struct {
	// NS is the namespace both run in.
	NS string
	// Dir holds the data, certificates, tokens, kubeconfigs and logs.
	Dir string
	// URL is the API server's, as seen inside NS.
	URL string
	// AdminKubeconfig and AgentKubeconfig are kubeconfig files of the
	// two identities.
	AdminKubeconfig, AgentKubeconfig string

	addr   netip.Addr
	caPEM  []byte
	tokens map[string]string
	bins   kubelab.Binaries
	args   []string
	etcd   *proc
	api    *proc
	starts int
}

// Start builds the binaries if needed (see Build), starts etcd and the API
// server in opts.NS (a new namespace by default), waits until the server
// is ready (its RBAC roles bootstrapped), and stops both when the test
// ends. It skips unless root (namespaces need it).
func Start(t testing.TB, opts Options) *Cluster {
	t.Helper()
	nstest.RequireRoot(t)
	bins := Build(t)
	if opts.NS == "" {
		opts.NS = nstest.NewNS(t, "kube").Name
	}
	if !opts.Addr.IsValid() {
		opts.Addr = netip.MustParseAddr("127.0.0.1")
	}
	c := &Cluster{
		NS:   opts.NS,
		Dir:  t.TempDir(),
		URL:  "https://" + net.JoinHostPort(opts.Addr.String(), strconv.Itoa(APIServerPort)),
		addr: opts.Addr,
		bins: bins,
	}
	c.writeFiles(t)
	etcd, err := startProc(c.NS, filepath.Join(c.Dir, "etcd.log"),
		kubelab.EtcdArgs(c.bins.Etcd, "kubetest", filepath.Join(c.Dir, "etcd"), etcdClientPort, etcdPeerPort)...)
	if err != nil {
		t.Fatalf("kubetest: %v", err)
	}
	c.etcd = etcd
	t.Cleanup(func() {
		if c.api != nil {
			c.api.stop()
			if t.Failed() {
				t.Logf("kubetest: kube-apiserver log (end):\n%s", c.api.tail(4096))
			}
		}
		c.etcd.stop()
		if t.Failed() {
			t.Logf("kubetest: etcd log (end):\n%s", c.etcd.tail(2048))
		}
	})
	c.startAPIServer(t)
	return c
}

// Restart stops the API server (SIGTERM) and starts it again on the same
// etcd, then waits until it is ready. Clients made before keep working
// once it is back.
func (c *Cluster) Restart(t testing.TB) {
	t.Helper()
	c.api.stop()
	c.startAPIServer(t)
}

// StopAPIServer stops the API server; StartAPIServer starts it again.
func (c *Cluster) StopAPIServer() { c.api.stop() }

// StartAPIServer starts a stopped API server and waits until it is ready.
func (c *Cluster) StartAPIServer(t testing.TB) {
	t.Helper()
	if !c.api.exited() {
		t.Fatalf("kubetest: the API server is running")
	}
	c.startAPIServer(t)
}

func (c *Cluster) startAPIServer(t testing.TB) {
	t.Helper()
	c.starts++
	log := filepath.Join(c.Dir, fmt.Sprintf("kube-apiserver-%d.log", c.starts))
	api, err := startProc(c.NS, log, append([]string{c.bins.APIServer}, c.args...)...)
	if err != nil {
		t.Fatalf("kubetest: %v", err)
	}
	c.api = api
	start := time.Now()
	cs := c.Client(t, AdminUser)
	ctx, cancel := context.WithTimeout(context.Background(), readyTimeout)
	defer cancel()
	err = await.Poll(ctx, 100*time.Millisecond, func() error {
		if api.exited() {
			return fmt.Errorf("kube-apiserver exited: %v", api.err)
		}
		rctx, rcancel := context.WithTimeout(ctx, 5*time.Second)
		defer rcancel()
		_, err := cs.Discovery().RESTClient().Get().AbsPath("/readyz").DoRaw(rctx)
		return err
	})
	if err != nil {
		t.Fatalf("kubetest: kube-apiserver not ready: %v\n%s", err, api.tail(4096))
	}
	t.Logf("kubetest: kube-apiserver (pid %d) ready in %v", c.PID(), time.Since(start).Round(10*time.Millisecond))
}

// PID is the API server's process ID.
func (c *Cluster) PID() int { return c.api.cmd.Process.Pid }

// Token returns the bearer token of user (AdminUser or AgentUser).
func (c *Cluster) Token(user string) string { return c.tokens[user] }

// CAPEM is the certificate of the CA that signed the API server's
// serving certificate.
func (c *Cluster) CAPEM() []byte { return c.caPEM }

// RESTConfig returns a client configuration for user (AdminUser or
// AgentUser) whose connections are made inside the cluster's namespace.
func (c *Cluster) RESTConfig(t testing.TB, user string) *rest.Config {
	t.Helper()
	tok, ok := c.tokens[user]
	if !ok {
		t.Fatalf("kubetest: no user %q", user)
	}
	ns := c.NS
	return &rest.Config{
		Host:            c.URL,
		BearerToken:     tok,
		TLSClientConfig: rest.TLSClientConfig{CAData: c.caPEM},
		Dial: func(ctx context.Context, network, addr string) (net.Conn, error) {
			return lab.DialInNS(ctx, ns, network, addr)
		},
		// Tests create objects in bursts: no client-side throttling.
		QPS:   -1,
		Burst: -1,
	}
}

// Client returns a clientset for user, connecting inside the namespace.
func (c *Cluster) Client(t testing.TB, user string) kubernetes.Interface {
	t.Helper()
	cs, err := kubernetes.NewForConfig(c.RESTConfig(t, user))
	if err != nil {
		t.Fatalf("kubetest: clientset: %v", err)
	}
	return cs
}

// GrantAgent gives AgentUser the rules, through a ClusterRole and a
// ClusterRoleBinding named "kubetest-agent" (replaced if they exist).
func (c *Cluster) GrantAgent(t testing.TB, rules ...rbacv1.PolicyRule) {
	t.Helper()
	cs := c.Client(t, AdminUser)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	const name = "kubetest-agent"
	role := &rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: name}, Rules: rules}
	binding := &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: name},
		Subjects:   []rbacv1.Subject{{APIGroup: rbacv1.GroupName, Kind: rbacv1.UserKind, Name: AgentUser}},
	}
	roles, bindings := cs.RbacV1().ClusterRoles(), cs.RbacV1().ClusterRoleBindings()
	for _, err := range []error{
		ignoreNotFound(roles.Delete(ctx, name, metav1.DeleteOptions{})),
		ignoreNotFound(bindings.Delete(ctx, name, metav1.DeleteOptions{})),
		second(roles.Create(ctx, role, metav1.CreateOptions{})),
		second(bindings.Create(ctx, binding, metav1.CreateOptions{})),
	} {
		if err != nil {
			t.Fatalf("kubetest: grant the agent %v: %v", rules, err)
		}
	}
}

func ignoreNotFound(err error) error {
	if apierrors.IsNotFound(err) {
		return nil
	}
	return err
}

func second[T any](_ T, err error) error { return err }

// writeFiles writes the credentials and the kubeconfigs, and sets the
// server's flags.
func (c *Cluster) writeFiles(t testing.TB) {
	t.Helper()
	creds, err := kubelab.NewCredentials(c.Dir, c.addr.String(), "kubernetes", "kubernetes.default")
	if err != nil {
		t.Fatal(err)
	}
	c.caPEM, c.tokens = creds.CAPEM, creds.Tokens
	c.AdminKubeconfig = filepath.Join(c.Dir, "admin.kubeconfig")
	c.AgentKubeconfig = filepath.Join(c.Dir, "netagent.kubeconfig")
	for path, user := range map[string]string{c.AdminKubeconfig: AdminUser, c.AgentKubeconfig: AgentUser} {
		if err := kubelab.WriteKubeconfig(path, c.URL, c.caPEM, user, c.tokens[user]); err != nil {
			t.Fatal(err)
		}
	}
	c.args = kubelab.APIServerArgs(creds, kubelab.ClientURL(etcdClientPort), c.addr, c.addr, c.Dir)
}
