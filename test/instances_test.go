package test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/netagent/netagent/agent"
	"github.com/netagent/netagent/internal/await"
	"github.com/netagent/netagent/internal/lab"
)

// Scenarios 3 and 7 of docs/reliability.md: several instances per host,
// and kernel state the agent does not own.

// vxlanConfig2 is the second instance's network: another network, VNI 2.
const vxlanConfig2 = `{"Network":"10.6.0.0/16","SubnetMax":"10.6.199.0","Backend":{"Type":"vxlan","VNI":2}}`

// instance2 is the second agent of a host: another --etcd-prefix, and the
// files flanneld's flags name.
type instance2 struct {
	prefix string
	// socket is the status socket; on the host that runs with the
	// derived default it is agent.StatusSocketFor(prefix).
	socket     map[string]string
	subnetFile func(h *lab.Host) string
	agents     map[string]*lab.Proc
}

// startInstance2 starts the second instance's agent on h with flanneld's
// flags; with derived, it runs without --status-socket and --probe-port,
// on their defaults derived from the prefix (a prefix of this run only,
// so the socket's path under /run/netagent is too).
func (c *cluster) startInstance2(in *instance2, h *lab.Host, derived bool) {
	c.t.Helper()
	args := []string{
		binaries(c.t)["./cmd/netagent"], "run",
		"--etcd-endpoints=" + strings.Join(c.lab.EtcdEndpoints(), ","),
		"--etcd-prefix=" + in.prefix,
		"--subnet-file=" + in.subnetFile(h),
		"--docker-opts-file=" + filepath.Join(h.Dir, "docker2"),
		"--ip-masq",
		"--iptables-resync=500ms",
	}
	args = append(args, c.opts.AgentArgs...)
	if derived {
		in.socket[h.Name] = agent.StatusSocketFor(in.prefix)
		c.t.Cleanup(func() { os.Remove(in.socket[h.Name]) })
	} else {
		in.socket[h.Name] = filepath.Join(h.Dir, "netagent2.sock")
		args = append(args, "--status-socket="+in.socket[h.Name], fmt.Sprintf("--probe-port=%d", agent.ProbePortFor(in.prefix)))
	}
	p, err := c.lab.StartProcess(h.NS, nil, args...)
	if err != nil {
		c.t.Fatalf("start second agent on %s: %v", h.Name, err)
	}
	in.agents[h.Name] = p
	ctx, cancel := context.WithTimeout(c.ctx, 30*time.Second)
	defer cancel()
	if err := awaitFile(ctx, in.subnetFile(h)); err != nil {
		c.t.Fatalf("second agent on %s: %v\n%s", h.Name, err, p.Tail(2000))
	}
}

func awaitFile(ctx context.Context, path string) error {
	for {
		if _, err := os.Stat(path); err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("no %s: %w", path, ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// report2 runs `netagent status --json` for the second instance on h:
// with the derived socket, from --etcd-prefix alone.
func (c *cluster) report2(in *instance2, h *lab.Host) (*agent.Report, error) {
	args := []string{binaries(c.t)["./cmd/netagent"], "status", "--json", "--etcd-prefix=" + in.prefix,
		"--etcd-endpoints=" + strings.Join(c.lab.EtcdEndpoints(), ",")}
	if in.socket[h.Name] != agent.StatusSocketFor(in.prefix) {
		args = append(args, "--status-socket="+in.socket[h.Name])
	}
	out, err := c.exec(h.NS, args...)
	if err != nil {
		return nil, fmt.Errorf("%w: %s", err, out)
	}
	var r agent.Report
	if err := json.Unmarshal(out, &r); err != nil {
		return nil, fmt.Errorf("status --json: %w: %s", err, out)
	}
	return &r, nil
}

// addContainer2 attaches a container to the second instance's network:
// the agent's CNI plugin with the second subnet file, on bridge cni1.
func (c *cluster) addContainer2(in *instance2, h *lab.Host, name string) *container {
	c.t.Helper()
	ctn, err := c.lab.AddContainerNS(c.ctx, h, name)
	if err != nil {
		c.t.Fatal(err)
	}
	conf, _ := json.Marshal(map[string]any{
		"cniVersion": "1.1.0", "name": "netagent2", "type": "netagent-cni",
		"subnetFile": in.subnetFile(h), "dataDir": filepath.Join(h.Dir, "cni2"),
		"statusSocket": in.socket[h.Name], "ipam": map[string]any{"dataDir": filepath.Join(h.Dir, "ipam2")},
		"delegate": map[string]any{"bridge": "cni1"},
	})
	b := binaries(c.t)
	ctx, cancel := context.WithTimeout(c.ctx, 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "ip", "netns", "exec", h.NS, "env",
		"CNI_COMMAND=ADD", "CNI_CONTAINERID="+ctn.NS, "CNI_NETNS="+lab.NSPath(ctn.NS),
		"CNI_IFNAME=eth0", "CNI_PATH="+filepath.Dir(b["./cni-plugin/netagent-cni"]), b["./cni-plugin/netagent-cni"])
	cmd.Stdin = bytes.NewReader(conf)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		c.t.Fatalf("CNI ADD of %s: %v: %s %s", ctn.NS, err, out, stderr.Bytes())
	}
	var r struct {
		IPs []struct{ Address string } `json:"ips"`
	}
	if err := json.Unmarshal(out, &r); err != nil || len(r.IPs) == 0 {
		c.t.Fatalf("CNI ADD result %s: %v", out, err)
	}
	p, err := netip.ParsePrefix(r.IPs[0].Address)
	if err != nil {
		c.t.Fatal(err)
	}
	return &container{Container: ctn, IP: p.Addr(), IP4: p.Addr()}
}

// repairTotal sums a report's repair counters.
func repairTotal(r *agent.Report) uint64 {
	var n uint64
	if r.Backend != nil {
		for _, v := range r.Backend.Repairs {
			n += v
		}
	}
	return n
}

// TestTwoInstancesPerHost (scenario 3): every host runs two agents, for
// two networks (two etcd prefixes, VNIs 1 and 2), started with flanneld's
// flags; one of them on the status socket and probe port derived from its
// prefix. Both ping matrices pass, neither agent repairs what the other
// installed (no repair at all after convergence, across several passes of
// every agent), both masquerade rule sets are in place under their own
// chains, and both probe responders answer.
func TestTwoInstancesPerHost(t *testing.T) {
	t.Parallel()
	c := newCluster(t, clusterOptions{Hosts: 3, Config: vxlanConfig, AgentArgs: []string{"--resync-interval=2s"}})
	in := &instance2{
		prefix:     "/netagent-test-" + c.lab.Prefix() + "/network",
		socket:     map[string]string{},
		subnetFile: func(h *lab.Host) string { return filepath.Join(h.Dir, "subnet2.env") },
		agents:     map[string]*lab.Proc{},
	}
	c.put(in.prefix+"/config", vxlanConfig2)
	c.startAll()
	for i, h := range c.hosts() {
		c.startInstance2(in, h, i == 0)
	}
	c.awaitReady()

	var ctns1, ctns2 []*container
	for i, h := range c.hosts() {
		ctns1 = append(ctns1, c.addContainer(h))
		ctns2 = append(ctns2, c.addContainer2(in, h, fmt.Sprintf("n%d", i)))
	}
	// reports are every agent's, by host/instance.
	reports := func() (map[string]*agent.Report, error) {
		all := map[string]*agent.Report{}
		for _, h := range c.hosts() {
			r1, err := c.statusReport(h)
			if err != nil {
				return nil, fmt.Errorf("%s instance 1: %w", h.Name, err)
			}
			r2, err := c.report2(in, h)
			if err != nil {
				return nil, fmt.Errorf("%s instance 2: %w", h.Name, err)
			}
			all[h.Name+"/1"], all[h.Name+"/2"] = r1, r2
		}
		return all, nil
	}
	mustReports := func() map[string]*agent.Report {
		t.Helper()
		all, err := reports()
		if err != nil {
			t.Fatal(err)
		}
		return all
	}
	// Converged: every agent programs its two peers.
	await.Eventually(t, 60*time.Second, "both instances programmed on every host", func() error {
		all, err := reports()
		if err != nil {
			return err
		}
		for name, r := range all {
			if len(r.Peers) != 2 {
				return fmt.Errorf("%s: %d peers", name, len(r.Peers))
			}
			for _, p := range r.Peers {
				if !p.Programmed {
					return fmt.Errorf("%s: peer %s: %s", name, p.Subnet, p.Error)
				}
			}
		}
		return nil
	})
	c.pingMatrix(ctns1)
	c.pingMatrix(ctns2)

	before := mustReports()
	c.pingMatrix(ctns1)
	c.pingMatrix(ctns2)
	// Every agent passes twice more over the other's entries.
	await.Eventually(t, 60*time.Second, "two more passes of every agent", func() error {
		all, err := reports()
		if err != nil {
			return err
		}
		for name, r := range all {
			if r.Backend.Passes < before[name].Backend.Passes+2 {
				return fmt.Errorf("%s: %d passes, was %d", name, r.Backend.Passes, before[name].Backend.Passes)
			}
		}
		return nil
	})
	for name, r := range mustReports() {
		if got, was := repairTotal(r), repairTotal(before[name]); got != was {
			t.Errorf("%s: repairs %v, were %v after convergence: an agent repairs what another installs", name, r.Backend.Repairs, before[name].Backend.Repairs)
		}
	}

	chain2 := agent.MasqNames(in.prefix).PostRouting
	for _, h := range c.hosts() {
		for chain, net := range map[string]string{"FLANNEL-POSTRTG": "10.5.0.0/16", chain2: "10.6.0.0/16"} {
			out := c.mustExec(h.NS, "iptables", "-t", "nat", "-S", chain)
			if !strings.Contains(out, net) {
				t.Errorf("%s: %s lacks %s:\n%s", h.Name, chain, net, out)
			}
		}
		if out := c.mustExec(h.NS, "iptables", "-t", "nat", "-S", "FLANNEL-POSTRTG"); strings.Contains(out, "10.6.0.0/16") {
			t.Errorf("%s: the default chain holds the second network:\n%s", h.Name, out)
		}
	}
	// Both responders answer: each instance's probes on its own port.
	await.Eventually(t, 60*time.Second, "probes answered by both instances", func() error {
		all, err := reports()
		if err != nil {
			return err
		}
		for name, r := range all {
			if !r.Probe.Enabled || r.Probe.Answered == 0 || r.Probe.Unreachable != 0 {
				return fmt.Errorf("%s: probe enabled %t state %q answered %d unreachable %d", name, r.Probe.Enabled, r.Probe.State, r.Probe.Answered, r.Probe.Unreachable)
			}
			if want := agent.ProbePortFor(in.prefix); strings.HasSuffix(name, "/2") && r.Probe.Port != want {
				return fmt.Errorf("%s: probe port %d, want %d", name, r.Probe.Port, want)
			}
		}
		return nil
	})
	for _, h := range c.hosts() {
		if c.agent(h).Exited() || in.agents[h.Name].Exited() {
			t.Errorf("%s: an agent exited", h.Name)
		}
	}
}

// TestForeignRouteOverPeer (scenario 7): an administrator's route over a
// peer's prefix is reported and left in place, not undone; once it is
// deleted, the agent routes the peer again.
func TestForeignRouteOverPeer(t *testing.T) {
	t.Parallel()
	c := newCluster(t, clusterOptions{Hosts: 2, Config: vxlanConfig, AgentArgs: []string{"--resync-interval=2s"}})
	infos := c.startAll()
	c.awaitReady()
	h1, h2 := c.hosts()[0], c.hosts()[1]
	ctns := []*container{c.addContainer(h1), c.addContainer(h2)}
	c.pingMatrix(ctns)
	peer := infos[h2.Name].Subnet.String()

	// Over the underlay: h2 forwards it to its containers, so traffic
	// still flows, by the administrator's route.
	c.mustExec(h1.NS, "ip", "route", "replace", peer, "via", h2.Underlay.Addr().String(), "dev", "eth0")
	var passes uint64
	await.Eventually(t, 30*time.Second, "foreign route reported", func() error {
		r, err := c.statusReport(h1)
		if err != nil {
			return err
		}
		for _, p := range r.Peers {
			if p.Subnet == peer && p.ForeignRoute != "" && !p.Programmed && r.Backend.ForeignRoutes == 1 {
				passes = r.Backend.Passes
				return nil
			}
		}
		return fmt.Errorf("peers %+v, foreign_routes %d", r.Peers, r.Backend.ForeignRoutes)
	})
	await.Eventually(t, 30*time.Second, "two more passes", func() error {
		r, err := c.statusReport(h1)
		if err != nil {
			return err
		}
		if r.Backend.Passes < passes+2 {
			return fmt.Errorf("%d passes", r.Backend.Passes)
		}
		return nil
	})
	if out := c.mustExec(h1.NS, "ip", "route", "show", peer); !strings.Contains(out, "via "+h2.Underlay.Addr().String()+" dev eth0") || strings.Contains(out, "proto 78") {
		t.Errorf("foreign route undone: %q", out)
	}
	if r, err := c.statusReport(h1); err != nil || r.Backend.ForeignRoutes != 1 || r.Backend.Repairs["route"] != 0 {
		t.Errorf("after passes: %v; want one conflict counted (reported once) and no route repair", err)
	}

	c.mustExec(h1.NS, "ip", "route", "del", peer)
	await.Eventually(t, 30*time.Second, "own route back", func() error {
		out := c.mustExec(h1.NS, "ip", "route", "show", peer)
		if !strings.Contains(out, "dev flannel.1") || !strings.Contains(out, "proto 78") {
			return fmt.Errorf("route %q", out)
		}
		r, err := c.statusReport(h1)
		if err != nil {
			return err
		}
		for _, p := range r.Peers {
			if p.Subnet == peer && (p.ForeignRoute != "" || !p.Programmed) {
				return fmt.Errorf("peer %+v", p)
			}
		}
		return nil
	})
	c.pingMatrix(ctns)
}

// TestSecondAgentSameInstance (scenario 7): a second agent for the same
// prefix in one network namespace (its own status socket and files)
// refuses to start, naming the first one's PID; the first keeps serving.
func TestSecondAgentSameInstance(t *testing.T) {
	t.Parallel()
	c := newCluster(t, clusterOptions{Hosts: 2, Config: vxlanConfig})
	c.startAll()
	c.awaitReady()
	h1 := c.hosts()[0]
	first := c.agent(h1)
	p, err := c.lab.StartProcess(h1.NS, nil,
		binaries(t)["./cmd/netagent"], "run",
		"--etcd-endpoints="+strings.Join(c.lab.EtcdEndpoints(), ","),
		"--subnet-file="+filepath.Join(h1.Dir, "subnet-b.env"),
		"--docker-opts-file="+filepath.Join(h1.Dir, "docker-b"),
		"--status-socket="+filepath.Join(h1.Dir, "netagent-b.sock"))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(c.ctx, 30*time.Second)
	defer cancel()
	if err := p.Wait(ctx); err == nil || ctx.Err() != nil {
		p.Kill()
		t.Fatalf("second agent: %v; want it to exit with an error\n%s", err, p.Tail(2000))
	}
	log := p.Tail(4000)
	if want := fmt.Sprintf("another netagent (process %d) already serves --etcd-prefix %s", first.PID(), prefix); !strings.Contains(log, want) {
		t.Errorf("second agent's error does not say %q:\n%s", want, log)
	}
	if _, err := os.Stat(filepath.Join(h1.Dir, "subnet-b.env")); err == nil {
		t.Errorf("second agent wrote a subnet file")
	}
	ctns := []*container{c.addContainer(h1), c.addContainer(c.hosts()[1])}
	c.pingMatrix(ctns)
	if first.Exited() {
		t.Errorf("first agent exited")
	}
}
