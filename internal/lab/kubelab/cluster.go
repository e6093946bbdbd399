package kubelab

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/netagent/netagent/internal/await"
	"github.com/netagent/netagent/internal/lab"
	"github.com/netagent/netagent/lease"
)

// Ports of the API server's etcd on the etcd namespace's loopback, apart
// from the lab's own etcd (2379, 2380).
const (
	etcdClientPort = 12379
	etcdPeerPort   = 12380
)

// Timeouts that only bound a hang: a start takes seconds, longer on a
// loaded machine.
const (
	readyTimeout = 3 * time.Minute
	stopGrace    = 10 * time.Second
)

// Options configure Start.
type Options struct {
	// Binaries are etcd's and the API server's (Build).
	Binaries Binaries
	// NetConf is the network config, written to every host's
	// net-conf.json; the Nodes' pod CIDRs are allocated from it.
	NetConf []byte
}

// Cluster is an API server and its etcd running in a lab's etcd
// namespace, with a Node per lab host. Its methods are safe for
// concurrent use.
type Cluster struct {
	// URL is the API server's, as hosts (and the etcd namespace) see it.
	URL string
	// Dir holds etcd's data, the credentials and the API server's
	// generated certificates: the lab's kube/ directory, removed by its
	// Close.
	Dir string

	lab     *lab.Lab
	creds   *Credentials
	config  *lease.Config
	netConf []byte
	args    []string // the API server's, binary first
	admin   kubernetes.Interface

	mu    sync.Mutex
	api   *lab.Proc
	nodes int // Nodes registered, the index of the next pod CIDRs
}

// Start runs etcd and the API server in l's etcd namespace, binds the
// agent's identity to the shipped ClusterRole, registers a Node for every
// host of l with its pod CIDRs, and writes every host's kubeconfig and
// net-conf.json (see the package documentation). The processes are the
// lab's: its Close stops them and removes Dir.
func Start(ctx context.Context, l *lab.Lab, opts Options) (*Cluster, error) {
	cfg, err := lease.ParseConfig(opts.NetConf)
	if err != nil {
		return nil, fmt.Errorf("kubelab: net-conf.json: %w", err)
	}
	v4, v6 := l.Families()
	addr, bind := lab.EtcdAddr, lab.EtcdAddr
	switch {
	case !v4:
		addr, bind = lab.EtcdAddrV6, lab.EtcdAddrV6
	case v6:
		bind = netip.IPv6Unspecified() // both families
	}
	c := &Cluster{
		URL:     "https://" + net.JoinHostPort(addr.String(), strconv.Itoa(APIServerPort)),
		Dir:     l.KubeDir(),
		lab:     l,
		config:  cfg,
		netConf: opts.NetConf,
	}
	if err := os.MkdirAll(c.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("kubelab: %w", err)
	}
	hosts := []string{"kubernetes", "kubernetes.default", lab.EtcdAddr.String(), lab.EtcdAddrV6.String()}
	if c.creds, err = NewCredentials(c.Dir, hosts...); err != nil {
		return nil, err
	}
	c.args = append([]string{opts.Binaries.APIServer},
		APIServerArgs(c.creds, ClientURL(etcdClientPort), bind, addr, c.Dir)...)
	if c.admin, err = c.Client(AdminUser); err != nil {
		return nil, err
	}
	// The lab stops it with its other processes.
	if _, err := l.StartProcess(l.EtcdNS(), nil,
		EtcdArgs(opts.Binaries.Etcd, "netagent-lab", filepath.Join(c.Dir, "etcd"), etcdClientPort, etcdPeerPort)...); err != nil {
		return nil, err
	}
	if err := c.StartAPIServer(ctx); err != nil {
		return nil, err
	}
	if err := c.grantAgent(ctx); err != nil {
		return nil, err
	}
	for _, h := range l.Hosts() {
		if err := c.setUpHost(ctx, h); err != nil {
			return nil, err
		}
	}
	return c, nil
}

// StartAPIServer starts the API server (after StopAPIServer) and waits
// until it is ready.
func (c *Cluster) StartAPIServer(ctx context.Context) error {
	c.mu.Lock()
	if c.api != nil && !c.api.Exited() {
		c.mu.Unlock()
		return errors.New("kubelab: the API server is running")
	}
	api, err := c.lab.StartProcess(c.lab.EtcdNS(), nil, c.args...)
	if err != nil {
		c.mu.Unlock()
		return err
	}
	c.api = api
	c.mu.Unlock()
	rctx, cancel := context.WithTimeout(ctx, readyTimeout)
	defer cancel()
	go func() { // an exit ends the wait
		select {
		case <-api.Done():
			cancel()
		case <-rctx.Done():
		}
	}()
	err = await.Poll(rctx, 100*time.Millisecond, func() error {
		actx, acancel := context.WithTimeout(rctx, 5*time.Second)
		defer acancel()
		_, err := c.admin.Discovery().RESTClient().Get().AbsPath("/readyz").DoRaw(actx)
		return err
	})
	if api.Exited() {
		err = fmt.Errorf("kube-apiserver exited: %w", api.Wait(ctx))
	}
	if err != nil {
		return fmt.Errorf("kubelab: kube-apiserver not ready: %w\n%s", err, api.Tail(4096))
	}
	return nil
}

// StopAPIServer stops the API server (SIGTERM, then SIGKILL after a
// grace) and waits for it to exit.
func (c *Cluster) StopAPIServer() error {
	c.mu.Lock()
	api := c.api
	c.mu.Unlock()
	if api == nil || api.Exited() {
		return nil
	}
	// Its exit status after SIGTERM is not an error; having to kill it is.
	if err := api.Stop(stopGrace); err != nil && !isExitError(err) {
		return fmt.Errorf("kubelab: stop kube-apiserver: %w", err)
	}
	return nil
}

// Restart stops the API server and starts it again on the same etcd, as
// an upgrade of the control plane would; it returns once it is ready.
func (c *Cluster) Restart(ctx context.Context) error {
	if err := c.StopAPIServer(); err != nil {
		return err
	}
	return c.StartAPIServer(ctx)
}

// APIServer is the API server's current process.
func (c *Cluster) APIServer() *lab.Proc {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.api
}

// CAPEM is the certificate of the CA that signed the API server's.
func (c *Cluster) CAPEM() []byte { return c.creds.CAPEM }

// RESTConfig is a client configuration authenticating with token whose
// connections are made inside the lab's etcd namespace (lab.DialInNS),
// for a program in the initial namespace.
func (c *Cluster) RESTConfig(token string) *rest.Config {
	ns := c.lab.EtcdNS()
	return &rest.Config{
		Host:            c.URL,
		BearerToken:     token,
		TLSClientConfig: rest.TLSClientConfig{CAData: c.creds.CAPEM},
		Dial: func(ctx context.Context, network, addr string) (net.Conn, error) {
			return lab.DialInNS(ctx, ns, network, addr)
		},
		// The lab makes objects in bursts: no client-side throttling.
		QPS:   -1,
		Burst: -1,
	}
}

// Client is a clientset of user (AdminUser or AgentUser); see RESTConfig.
func (c *Cluster) Client(user string) (kubernetes.Interface, error) {
	tok, ok := c.creds.Tokens[user]
	if !ok {
		return nil, fmt.Errorf("kubelab: no user %q", user)
	}
	cs, err := kubernetes.NewForConfig(c.RESTConfig(tok))
	if err != nil {
		return nil, fmt.Errorf("kubelab: %w", err)
	}
	return cs, nil
}

// Kubeconfig is the path of h's kubeconfig file (the agent's identity).
func Kubeconfig(h *lab.Host) string { return filepath.Join(h.Dir, "kubeconfig") }

// NetConfPath is the path of h's net-conf.json.
func NetConfPath(h *lab.Host) string { return filepath.Join(h.Dir, "net-conf.json") }

// AgentArgs are the flags that put h's agent in kube mode (the node name
// comes from AgentEnv).
func AgentArgs(h *lab.Host) []string {
	return []string{"--kube-subnet-mgr", "--kubeconfig-file=" + Kubeconfig(h), "--net-config-path=" + NetConfPath(h)}
}

// AgentEnv is the environment of h's agent in kube mode: NODE_NAME, as a
// DaemonSet sets it from spec.nodeName.
func AgentEnv(h *lab.Host) []string { return []string{"NODE_NAME=" + h.Name} }

// grantAgent makes the ClusterRole AgentRole with the shipped rules and
// binds it to AgentUser (the manifest binds it to the netagent
// ServiceAccount, whose token a DaemonSet's pods get; a lab host has a
// static token instead), then waits until RBAC lets the agent list Nodes.
func (c *Cluster) grantAgent(ctx context.Context) error {
	rules, err := AgentRules()
	if err != nil {
		return err
	}
	role := &rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: AgentRole}, Rules: rules}
	binding := &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: AgentRole},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: AgentRole},
		Subjects:   []rbacv1.Subject{{APIGroup: rbacv1.GroupName, Kind: rbacv1.UserKind, Name: AgentUser}},
	}
	if _, err := c.admin.RbacV1().ClusterRoles().Create(ctx, role, metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("kubelab: ClusterRole %s: %w", AgentRole, err)
	}
	if _, err := c.admin.RbacV1().ClusterRoleBindings().Create(ctx, binding, metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("kubelab: ClusterRoleBinding %s: %w", AgentRole, err)
	}
	agent, err := c.Client(AgentUser)
	if err != nil {
		return err
	}
	// RBAC's authorizer reads roles from an informer: the grant takes
	// effect shortly after it is written.
	wctx, cancel := context.WithTimeout(ctx, readyTimeout)
	defer cancel()
	if err := await.Poll(wctx, 100*time.Millisecond, func() error {
		_, err := agent.CoreV1().Nodes().List(wctx, metav1.ListOptions{Limit: 1})
		return err
	}); err != nil {
		return fmt.Errorf("kubelab: the agent's identity cannot list Nodes: %w", err)
	}
	return nil
}

// setUpHost writes h's kubeconfig and net-conf.json and registers its Node.
func (c *Cluster) setUpHost(ctx context.Context, h *lab.Host) error {
	if err := WriteKubeconfig(Kubeconfig(h), c.URL, c.creds.CAPEM, AgentUser, c.creds.Tokens[AgentUser]); err != nil {
		return err
	}
	if err := os.WriteFile(NetConfPath(h), c.netConf, 0o644); err != nil {
		return fmt.Errorf("kubelab: %w", err)
	}
	var addrs []netip.Addr
	for _, p := range []netip.Prefix{h.Underlay, h.UnderlayV6} {
		if p.IsValid() {
			addrs = append(addrs, p.Addr())
		}
	}
	_, err := c.AddNode(ctx, h.Name, addrs...)
	return err
}

// AddNode registers a Node named name with addrs as its InternalIP
// addresses, as a kubelet registers itself, then gives it the next pod
// CIDRs (AllocatePodCIDRs) with the patch kube-controller-manager's range
// allocator sends. It returns the Node as patched.
func (c *Cluster) AddNode(ctx context.Context, name string, addrs ...netip.Addr) (*corev1.Node, error) {
	node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{
		"kubernetes.io/hostname": name, "kubernetes.io/os": "linux",
	}}}
	for _, a := range addrs {
		node.Status.Addresses = append(node.Status.Addresses, corev1.NodeAddress{Type: corev1.NodeInternalIP, Address: a.String()})
	}
	node.Status.Addresses = append(node.Status.Addresses, corev1.NodeAddress{Type: corev1.NodeHostName, Address: name})
	nodes := c.admin.CoreV1().Nodes()
	created, err := nodes.Create(ctx, node, metav1.CreateOptions{})
	if err != nil {
		return nil, fmt.Errorf("kubelab: register Node %s: %w", name, err)
	}
	if len(created.Status.Addresses) == 0 {
		created.Status = node.Status
		if _, err := nodes.UpdateStatus(ctx, created, metav1.UpdateOptions{}); err != nil {
			return nil, fmt.Errorf("kubelab: Node %s status: %w", name, err)
		}
	}
	c.mu.Lock()
	i := c.nodes
	c.nodes++
	c.mu.Unlock()
	cidrs, err := AllocatePodCIDRs(c.config, i)
	if err != nil {
		return nil, err
	}
	return c.patchPodCIDRs(ctx, name, cidrs)
}

// patchPodCIDRs sets spec.podCIDR and podCIDRs, as the controller
// manager's nodeutil.PatchNodeCIDRs does (a strategic merge patch).
func (c *Cluster) patchPodCIDRs(ctx context.Context, name string, cidrs []netip.Prefix) (*corev1.Node, error) {
	var ss []string
	for _, p := range cidrs {
		ss = append(ss, p.String())
	}
	patch, err := json.Marshal(map[string]any{"spec": map[string]any{"podCIDR": ss[0], "podCIDRs": ss}})
	if err != nil {
		return nil, err
	}
	n, err := c.admin.CoreV1().Nodes().Patch(ctx, name, types.StrategicMergePatchType, patch, metav1.PatchOptions{})
	if err != nil {
		return nil, fmt.Errorf("kubelab: Node %s pod CIDRs %v: %w", name, ss, err)
	}
	return n, nil
}

func isExitError(err error) bool {
	var ee *exec.ExitError
	return errors.As(err, &ee)
}

// Admin is the administrator's clientset (group system:masters).
func (c *Cluster) Admin() kubernetes.Interface { return c.admin }
