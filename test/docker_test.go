package test

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/netagent/netagent/internal/await"
	"github.com/netagent/netagent/internal/lab"
	"github.com/netagent/netagent/subnetfile"
)

const hostGWConfig = `{"Network":"10.5.0.0/16","Backend":{"Type":"host-gw"}}`

// TestDocker: Debian's Docker engine on each of three hosts, started with
// the agent's Docker options file, puts docker0 on the host's lease with
// the overlay's MTU; its containers reach each other across hosts, are
// masqueraded by the agent towards the outside, and keep or regain
// connectivity across a restart of dockerd and of the agent. Loss across
// each restart is logged (a figure, not an assertion).
func TestDocker(t *testing.T) {
	for _, tc := range []struct{ name, config string }{{"vxlan", vxlanConfig}, {"host-gw", hostGWConfig}} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			testDocker(t, tc.config)
		})
	}
}

func testDocker(t *testing.T, config string) {
	requirePrograms(t, "docker.io", "/usr/sbin/dockerd", "/usr/bin/containerd", lab.DockerCLI)
	c, infos := newRuntimeCluster(t, 3, config)
	rctx := runtimeContext(t, c)

	start := time.Now()
	engines := map[string]*lab.Docker{}
	var ctns []*container
	for _, h := range c.hosts() {
		ctx, cancel := context.WithTimeout(c.ctx, 30*time.Second)
		opts, err := lab.AwaitDockerNetworkOptions(ctx, h)
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		d, err := c.lab.StartDocker(rctx, h, opts)
		if err != nil {
			t.Fatal(err)
		}
		engines[h.Name] = d
		lc, err := d.Run(rctx, "d1")
		if err != nil {
			t.Fatal(err)
		}
		ctns = append(ctns, &container{Container: lc, IP: lc.Addr.Addr(), IP4: lc.Addr.Addr()})
	}
	t.Logf("figure: 3 Docker engines started and a container run on each in %v", time.Since(start).Round(time.Millisecond))

	for i, h := range c.hosts() {
		checkDockerHost(rctx, t, c, engines[h.Name], ctns[i], infos[h.Name])
	}
	c.pingMatrix(ctns)
	c.dfPing(ctns[0].NS, ctns[1].IP, infos[ctns[0].Host.Name].MTU-28)
	if t.Failed() {
		t.FailNow()
	}
	checkDockerMasquerade(t, c, ctns[0], c.hosts()[1])

	h2 := c.hosts()[1]
	// dockerd restarted on h2 while h1's container pings h2's.
	lost := lossAcross(t, c, ctns[0], ctns[1], "dockerd restart on "+h2.Name, func() {
		if err := engines[h2.Name].Restart(rctx); err != nil {
			t.Fatal(err)
		}
	})
	t.Logf("figure: dockerd restart on %s: %s", h2.Name, lost)
	checkDockerHost(rctx, t, c, engines[h2.Name], ctns[1], infos[h2.Name])
	c.pingMatrix(ctns)

	// The agent restarted on h2 while the containers run.
	lost = lossAcross(t, c, ctns[0], ctns[1], "agent restart on "+h2.Name, func() {
		if err := c.agent(h2).Stop(10 * time.Second); err != nil {
			t.Errorf("stop agent on %s: %v", h2.Name, err)
		}
		c.startAgent(h2)
		c.awaitReady()
	})
	t.Logf("figure: agent restart on %s: %s", h2.Name, lost)
	if info := c.awaitSubnetFile(h2); info.Subnet != infos[h2.Name].Subnet {
		t.Errorf("%s's lease after the agent's restart is %s, was %s (docker0 keeps the old one)", h2.Name, info.Subnet, infos[h2.Name].Subnet)
	}
	c.pingMatrix(ctns)
}

// newRuntimeCluster is newCluster for the runtime tests, with every
// agent started and ready: it skips without root or the containers'
// busybox, and checks, once the lab is closed, that the initial namespace
// is untouched and that nothing of the lab is left.
func newRuntimeCluster(t *testing.T, hosts int, config string) (*cluster, map[string]subnetfile.Info) {
	t.Helper()
	requireRoot(t)
	requireBusybox(t)
	watch := checkRootNamespaceUntouched(t)
	c := newCluster(t, clusterOptions{Hosts: hosts, Config: config})
	watch(c.lab)
	infos := c.startAll()
	c.awaitReady()
	return c, infos
}

// runtimeContext bounds the runtimes' commands of a test (an engine's
// start included): the deadline only stops a hang.
func runtimeContext(t *testing.T, c *cluster) context.Context {
	ctx, cancel := context.WithTimeout(c.ctx, 10*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// requirePrograms skips the test when one of programs, which the Debian
// package pkg installs (scripts/deps.sh does), is missing.
func requirePrograms(t *testing.T, pkg string, programs ...string) {
	t.Helper()
	for _, p := range programs {
		if _, err := exec.LookPath(p); err != nil {
			t.Skipf("%s is not installed (%v): scripts/deps.sh installs the Debian package %s", p, err, pkg)
		}
	}
}

// requireBusybox skips the test when the static busybox the containers'
// image is made of is missing.
func requireBusybox(t *testing.T) {
	t.Helper()
	var sink strings.Builder
	if err := lab.BusyboxRootfs(&sink); errors.Is(err, lab.ErrNoBusybox) {
		t.Skipf("%v: scripts/deps.sh installs it", err)
	}
}

// checkDockerHost asserts what the agent's options gave the engine of a
// host: docker0 holds the lease's first address, the container an address
// of the lease and, inside it, eth0 has the overlay's MTU (FLANNEL_MTU).
func checkDockerHost(ctx context.Context, t *testing.T, c *cluster, d *lab.Docker, ctn *container, info subnetfile.Info) {
	t.Helper()
	h := d.Host
	bip := netip.PrefixFrom(info.Subnet.Addr().Next(), info.Subnet.Bits())
	if out := c.mustExec(h.NS, "ip", "-o", "-4", "addr", "show", "dev", "docker0"); !containsField(out, bip.String()) {
		t.Errorf("%s: docker0 is %q, want %s (the lease's first address, --bip)", h.Name, strings.TrimSpace(out), bip)
	}
	if !info.Subnet.Contains(ctn.IP) || ctn.Gateway != bip.Addr() {
		t.Errorf("%s: container %s has %s via %s, want an address of the lease %s via %s", h.Name, ctn.Name, ctn.IP, ctn.Gateway, info.Subnet, bip.Addr())
	}
	out, err := d.CLI(ctx, "exec", ctn.Name, "cat", "/sys/class/net/eth0/mtu")
	if err != nil {
		t.Fatal(err)
	}
	if mtu, err := strconv.Atoi(strings.TrimSpace(string(out))); err != nil || mtu != info.MTU {
		t.Errorf("%s: eth0's MTU inside container %s is %q, want FLANNEL_MTU %d", h.Name, ctn.Name, out, info.MTU)
	}
}

// checkDockerMasquerade asserts that a Docker container's traffic to an
// address outside the overlay (another host's underlay address, standing
// for the outside) leaves masqueraded by the agent's rules (dockerd has
// --ip-masq=false from the agent's options), and that traffic to another
// container does not.
func checkDockerMasquerade(t *testing.T, c *cluster, from *container, outside *lab.Host) {
	t.Helper()
	hostAddr := from.Host.Underlay.Addr().String()
	seen := c.countSources(outside.NS, hostAddr, from.IP.String())
	if err := c.ping(from.NS, outside.Underlay.Addr(), lab.PingOptions{Count: 3}); err != nil {
		t.Fatalf("Docker container -> %s's underlay address: %v", outside.Name, err)
	}
	if got := seen(); got[hostAddr] < 3 || got[from.IP.String()] != 0 {
		t.Errorf("at %s, echo requests by source = %v: want 3 from %s (masqueraded), none from %s", outside.Name, got, hostAddr, from.IP)
	}
}

// lossAcross pings to from from at 100 packets/s while disrupt runs, and
// until a ping after it is answered again, and returns the loss as text
// for a figure.
func lossAcross(t *testing.T, c *cluster, from, to *container, what string, disrupt func()) string {
	t.Helper()
	const interval = 10 * time.Millisecond
	// Connectivity first, so that the loss counted is the disruption's.
	if err := c.ping(from.NS, to.IP, lab.PingOptions{Count: 1}); err != nil {
		t.Fatalf("%s: before: %v", what, err)
	}
	pr := startPing(t, from.NS, to.IP, interval, 30000)
	began := time.Now()
	disrupt()
	took := time.Since(began)
	await.Eventually(t, 60*time.Second, what+": "+from.NS+" reaches "+to.IP.String(), func() error {
		return c.ping(from.NS, to.IP, lab.PingOptions{Count: 1})
	})
	pr.stop()
	r := pr.wait(t)
	if r.received == 0 {
		t.Errorf("%s: no echo request answered", what)
	}
	return fmt.Sprintf("%d of %d echo requests lost at %v intervals (%v of pings); the disruption took %v",
		len(r.lost), r.sent, interval, time.Duration(len(r.lost))*interval, took.Round(time.Millisecond))
}

// checkRootNamespaceUntouched snapshots the firewall of the machine's
// initial network namespace (read only) and, when the test is over (its
// runtimes stopped, its lab closed), asserts that nothing changed there,
// that no docker0 or cni0 appeared (a runtime programs only the host
// namespace it was started in), and that nothing of the lab it is given
// (the returned function) is left: no mount under the lab's directory, no
// cgroup named after its namespaces. It must be called before the cluster
// is made, so that its check runs after the lab's Close.
func checkRootNamespaceUntouched(t *testing.T) (watch func(*lab.Lab)) {
	t.Helper()
	before := rootFirewall(t)
	var prefix, dir string
	t.Cleanup(func() {
		if after := rootFirewall(t); after != before {
			t.Errorf("the initial namespace's firewall changed:\nbefore:\n%s\nafter:\n%s", before, after)
		}
		for _, dev := range []string{"docker0", "cni0"} {
			if err := exec.Command("ip", "link", "show", "dev", dev).Run(); err == nil {
				t.Errorf("%s exists in the initial namespace", dev)
			}
		}
		if prefix == "" {
			return
		}
		mounts, err := os.ReadFile("/proc/self/mountinfo")
		if err != nil {
			t.Fatal(err)
		}
		for _, line := range strings.Split(string(mounts), "\n") {
			if strings.Contains(line, dir+"/") || strings.Contains(line, "/"+prefix+"-") {
				t.Errorf("mount left behind: %s", line)
			}
		}
		cgroups, _ := filepath.Glob("/sys/fs/cgroup/*/" + prefix + "-*")
		more, _ := filepath.Glob("/sys/fs/cgroup/" + prefix + "-*")
		if left := append(cgroups, more...); len(left) > 0 {
			t.Errorf("cgroups left behind: %v", left)
		}
	})
	return func(l *lab.Lab) { prefix, dir = l.Prefix(), l.Dir() }
}

// rootFirewall is the initial namespace's iptables and ip6tables rules
// (every table, without counters) and nftables ruleset (stateless).
func rootFirewall(t *testing.T) string {
	t.Helper()
	var b strings.Builder
	for _, cmd := range []string{"iptables", "ip6tables"} {
		for _, table := range []string{"filter", "nat", "mangle", "raw"} {
			out, err := exec.Command(cmd, "-w", "-t", table, "-S").CombinedOutput()
			fmt.Fprintf(&b, "%s -t %s: %v\n%s", cmd, table, err, out)
		}
	}
	out, err := exec.Command("nft", "-s", "list", "ruleset").CombinedOutput()
	fmt.Fprintf(&b, "nft: %v\n%s", err, out)
	return b.String()
}
