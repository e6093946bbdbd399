package test

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/netagent/netagent/internal/await"
	"github.com/netagent/netagent/internal/lab"
	"github.com/netagent/netagent/subnetfile"
)

const prefix = "/coreos.com/network"

var (
	buildOnce sync.Once
	bins      map[string]string
	buildErr  error
	binDir    string
)

// parallel is how many end-to-end tests run at once unless -test.parallel
// is given: they spend most of their time waiting (for a TTL, an outage,
// a convergence), not computing, so more of them than the default of one
// per CPU keep a 2-core machine busy without starving it.
const parallel = 4

func TestMain(m *testing.M) {
	flag.Parse()
	explicit := false
	flag.Visit(func(f *flag.Flag) { explicit = explicit || f.Name == "test.parallel" })
	if !explicit {
		if err := flag.Set("test.parallel", strconv.Itoa(parallel)); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
	}
	dir, err := os.MkdirTemp("", "netagent-e2e-bin")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binDir = dir
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// binaries builds the agent, the lab, the CNI plugin and the reference CNI
// plugins once per test binary.
func binaries(t *testing.T) map[string]string {
	t.Helper()
	buildOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
		defer cancel()
		bins, buildErr = lab.BuildBinaries(ctx, binDir,
			"./cmd/netagent", "./cmd/netagent-lab", "./cni-plugin/netagent-cni",
			"github.com/containernetworking/plugins/plugins/main/bridge",
			"github.com/containernetworking/plugins/plugins/ipam/host-local",
			"github.com/containernetworking/plugins/plugins/main/loopback",
			"github.com/containernetworking/plugins/plugins/meta/portmap")
	})
	if buildErr != nil {
		t.Fatalf("build: %v", buildErr)
	}
	return bins
}

func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("end-to-end tests need root: they create network namespaces")
	}
}

// clusterOptions describe a test cluster.
type clusterOptions struct {
	Hosts, RoutedHosts int
	// Config is the network config put in etcd.
	Config string
	// AgentArgs are added to every agent's command line.
	AgentArgs []string
	// IPv6 is the underlay's families (lab.Options.IPv6).
	IPv6 string
	// Env, if set, is added to the environment of h's agent.
	Env func(h *lab.Host) []string
	// StoreArgs, if set, replaces --etcd-endpoints on h's agent's command
	// line: the flags of another cluster store.
	StoreArgs func(h *lab.Host) []string
}

// cluster is a lab with etcd, the network config, and one agent per host.
type cluster struct {
	t      *testing.T
	ctx    context.Context
	lab    *lab.Lab
	etcd   *clientv3.Client
	opts   clusterOptions
	mu     sync.Mutex
	agents map[string]*lab.Proc // by host name
	cnis   map[string]int       // containers made per host, for names
}

func newCluster(t *testing.T, opts clusterOptions) *cluster {
	t.Helper()
	c := newBareCluster(t, opts)
	if err := c.lab.StartEtcd(c.ctx); err != nil {
		t.Fatalf("etcd: %v", err)
	}
	cli, err := c.lab.EtcdClient()
	if err != nil {
		t.Fatalf("etcd client: %v", err)
	}
	t.Cleanup(func() { cli.Close() })
	c.etcd = cli
	if opts.Config != "" {
		c.put(prefix+"/config", opts.Config)
	}
	return c
}

// newBareCluster is newCluster without the etcd: the test starts the etcd
// it needs (a cluster, TLS, authentication) and sets c.etcd.
func newBareCluster(t *testing.T, opts clusterOptions) *cluster {
	t.Helper()
	requireRoot(t)
	b := binaries(t)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	l, err := lab.New(ctx, lab.Options{Hosts: opts.Hosts, RoutedHosts: opts.RoutedHosts, IPv6: opts.IPv6, LabBinary: b["./cmd/netagent-lab"]})
	if err != nil {
		t.Fatalf("lab: %v", err)
	}
	c := &cluster{t: t, ctx: ctx, lab: l, opts: opts, agents: map[string]*lab.Proc{}, cnis: map[string]int{}}
	t.Cleanup(func() {
		if t.Failed() {
			c.dumpLogs()
		}
		if err := l.Close(); err != nil {
			t.Errorf("lab close: %v", err)
		}
	})
	return c
}

func (c *cluster) put(key, val string) {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(c.ctx, 5*time.Second)
	defer cancel()
	if _, err := c.etcd.Put(ctx, key, val); err != nil {
		c.t.Fatalf("etcd put %s: %v", key, err)
	}
}

func (c *cluster) hosts() []*lab.Host { return c.lab.Hosts() }

// agentArgs is the command line of h's agent.
func (c *cluster) agentArgs(h *lab.Host) []string {
	args := []string{binaries(c.t)["./cmd/netagent"], "run"}
	if c.opts.StoreArgs != nil {
		args = append(args, c.opts.StoreArgs(h)...)
	} else {
		args = append(args, "--etcd-endpoints="+strings.Join(c.lab.EtcdEndpoints(), ","))
	}
	args = append(args,
		"--subnet-file="+h.SubnetFile(),
		"--docker-opts-file="+filepath.Join(h.Dir, "docker"),
		"--status-socket="+statusSocket(h),
		"--ip-masq",
		"--iptables-resync=500ms",
		"--log-level=debug",
	)
	return append(args, c.opts.AgentArgs...)
}

func statusSocket(h *lab.Host) string { return filepath.Join(h.Dir, "netagent.sock") }

// startAgent starts h's agent.
func (c *cluster) startAgent(h *lab.Host) *lab.Proc {
	c.t.Helper()
	var env []string
	if c.opts.Env != nil {
		env = c.opts.Env(h)
	}
	p, err := c.lab.StartProcess(h.NS, env, c.agentArgs(h)...)
	if err != nil {
		c.t.Fatalf("start agent on %s: %v", h.Name, err)
	}
	c.mu.Lock()
	c.agents[h.Name] = p
	c.mu.Unlock()
	return p
}

// startAll starts every host's agent and waits for their subnet files.
func (c *cluster) startAll() map[string]subnetfile.Info {
	c.t.Helper()
	for _, h := range c.hosts() {
		c.startAgent(h)
	}
	infos := map[string]subnetfile.Info{}
	for _, h := range c.hosts() {
		infos[h.Name] = c.awaitSubnetFile(h)
	}
	return infos
}

func (c *cluster) agent(h *lab.Host) *lab.Proc {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.agents[h.Name]
}

func (c *cluster) awaitSubnetFile(h *lab.Host) subnetfile.Info {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(c.ctx, 30*time.Second)
	defer cancel()
	info, err := lab.AwaitSubnetFile(ctx, h)
	if err != nil {
		if p := c.agent(h); p != nil {
			c.t.Logf("agent on %s:\n%s", h.Name, p.Tail(40))
		}
		c.t.Fatal(err)
	}
	return info
}

// awaitReady waits until every agent reports its data plane programmed.
func (c *cluster) awaitReady() {
	c.t.Helper()
	for _, h := range c.hosts() {
		await.Eventually(c.t, 30*time.Second, h.Name+" ready", func() error { return statusReady(c, h) })
	}
}

// statusReady asks h's agent for its status and returns nil once the data
// plane was programmed.
func statusReady(c *cluster, h *lab.Host) error {
	out, err := c.exec(h.NS, binaries(c.t)["./cmd/netagent"], "status", "--json", "--status-socket="+statusSocket(h))
	if err != nil {
		return err
	}
	var r struct {
		Backend *struct {
			LastPass *time.Time `json:"last_pass"`
		} `json:"backend"`
	}
	if err := json.Unmarshal(out, &r); err != nil {
		return err
	}
	if r.Backend == nil || r.Backend.LastPass == nil {
		return fmt.Errorf("data plane not programmed yet")
	}
	return nil
}

func (c *cluster) exec(ns string, argv ...string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(c.ctx, 30*time.Second)
	defer cancel()
	return c.lab.Exec(ctx, ns, argv...)
}

func (c *cluster) mustExec(ns string, argv ...string) string {
	c.t.Helper()
	out, err := c.exec(ns, argv...)
	if err != nil {
		c.t.Fatal(err)
	}
	return string(out)
}

// container is a container namespace attached by the CNI plugin.
type container struct {
	*lab.Container
	// IP is the first address of the CNI result; IP4 and IP6 are its
	// address of each family (invalid when it has none).
	IP, IP4, IP6 netip.Addr
}

// cniConf is the conflist the tests attach containers with: the agent's
// plugin chained with portmap, as dist/10-netagent.conflist ships it.
func cniConf(h *lab.Host) string {
	return fmt.Sprintf(`{"cniVersion":"1.1.0","name":"netagent","plugins":[
  {"type":"netagent-cni","subnetFile":%q,"dataDir":%q,"statusSocket":%q,
   "ipam":{"dataDir":%q}},
  {"type":"portmap","capabilities":{"portMappings":true}}]}`,
		h.SubnetFile(), filepath.Join(h.Dir, "cni"), statusSocket(h), filepath.Join(h.Dir, "ipam"))
}

// addContainer makes a container namespace on h and attaches it through the
// CNI plugin, as a runtime would.
func (c *cluster) addContainer(h *lab.Host) *container {
	c.t.Helper()
	c.mu.Lock()
	c.cnis[h.Name]++
	name := fmt.Sprintf("c%d", c.cnis[h.Name])
	c.mu.Unlock()
	ctn, err := c.lab.AddContainerNS(c.ctx, h, name)
	if err != nil {
		c.t.Fatal(err)
	}
	res := c.cni(h, ctn, "ADD")
	var r struct {
		IPs []struct{ Address string } `json:"ips"`
	}
	if err := json.Unmarshal(res, &r); err != nil || len(r.IPs) == 0 {
		c.t.Fatalf("CNI ADD result %s: %v", res, err)
	}
	ct := &container{Container: ctn}
	for i, ip := range r.IPs {
		p, err := netip.ParsePrefix(ip.Address)
		if err != nil {
			c.t.Fatalf("CNI ADD result %s: %v", res, err)
		}
		if i == 0 {
			ct.IP = p.Addr()
		}
		if p.Addr().Is4() {
			ct.IP4 = p.Addr()
		} else {
			ct.IP6 = p.Addr()
		}
	}
	return ct
}

// cni runs the first plugin of cniConf (netagent-cni) for verb, as a
// runtime would, with the container namespace's name as container ID; a
// failure ends the test.
func (c *cluster) cni(h *lab.Host, ctn *lab.Container, verb string) []byte {
	c.t.Helper()
	out, stderr, err := c.runCNI(h, ctn, verb, ctn.NS)
	if err != nil {
		c.t.Fatalf("CNI %s of %s: %v: %s %s", verb, ctn.NS, err, out, stderr)
	}
	return out
}

// runCNI runs netagent-cni for verb with container ID id, in h's
// namespace, with the CNI environment a runtime sets, and returns its
// stdout and stderr.
func (c *cluster) runCNI(h *lab.Host, ctn *lab.Container, verb, id string) (stdout, stderr []byte, err error) {
	c.t.Helper()
	var list struct {
		CNIVersion string            `json:"cniVersion"`
		Name       string            `json:"name"`
		Plugins    []json.RawMessage `json:"plugins"`
	}
	if err := json.Unmarshal([]byte(cniConf(h)), &list); err != nil {
		c.t.Fatal(err)
	}
	var conf map[string]any
	if err := json.Unmarshal(list.Plugins[0], &conf); err != nil {
		c.t.Fatal(err)
	}
	conf["cniVersion"], conf["name"] = list.CNIVersion, list.Name
	stdin, _ := json.Marshal(conf)
	b := binaries(c.t)
	ctx, cancel := context.WithTimeout(c.ctx, 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "ip", "netns", "exec", h.NS, "env",
		"CNI_COMMAND="+verb, "CNI_CONTAINERID="+id, "CNI_NETNS="+lab.NSPath(ctn.NS),
		"CNI_IFNAME=eth0", "CNI_PATH="+filepath.Dir(b["./cni-plugin/netagent-cni"]), b["./cni-plugin/netagent-cni"])
	cmd.Stdin = bytes.NewReader(stdin)
	var errBuf bytes.Buffer
	cmd.Stderr = &errBuf
	out, err := cmd.Output()
	return out, errBuf.Bytes(), err
}

// ping asserts that from reaches dst.
func (c *cluster) ping(fromNS string, dst netip.Addr, opts lab.PingOptions) error {
	ctx, cancel := context.WithTimeout(c.ctx, 20*time.Second)
	defer cancel()
	_, err := c.lab.Ping(ctx, fromNS, dst, opts)
	return err
}

// pingMatrix asserts that every container reaches every other.
func (c *cluster) pingMatrix(ctns []*container) {
	c.t.Helper()
	for _, a := range ctns {
		for _, b := range ctns {
			if a == b {
				continue
			}
			if err := c.ping(a.NS, b.IP, lab.PingOptions{Count: 2}); err != nil {
				c.t.Errorf("%s (%s) -> %s (%s): %v", a.NS, a.IP, b.NS, b.IP, err)
			}
		}
	}
}

// handle returns a netlink handle in ns, for reading and breaking kernel
// state from the test.
func (c *cluster) handle(ns string) *netlink.Handle {
	c.t.Helper()
	nsh, err := netns.GetFromPath(lab.NSPath(ns))
	if err != nil {
		c.t.Fatal(err)
	}
	h, err := netlink.NewHandleAt(nsh)
	nsh.Close()
	if err != nil {
		c.t.Fatal(err)
	}
	c.t.Cleanup(h.Close)
	return h
}

func (c *cluster) dumpLogs() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for name, p := range c.agents {
		c.t.Logf("--- agent %s (last lines):\n%s", name, p.Tail(60))
	}
}
