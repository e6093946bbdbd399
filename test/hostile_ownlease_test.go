package test

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/netagent/netagent/internal/await"
	"github.com/netagent/netagent/subnetfile"
)

// TestOwnLeaseOverwritten (issue 13, scenario 6): garbage written over a
// live host's key, then the key deleted, in a 3-host vxlan cluster with
// containers. The host writes its own lease back each time (same subnet,
// same etcd lease) instead of taking a new subnet and orphaning its
// containers; its status counts the restores, no agent restarts, and the
// full ping matrix passes.
func TestOwnLeaseOverwritten(t *testing.T) {
	t.Parallel()
	c := newCluster(t, clusterOptions{Hosts: 3, Config: vxlanConfig, AgentArgs: healthzArgs})
	infos := c.startAll()
	c.awaitReady()
	var ctns []*container
	for _, h := range c.hosts() {
		ctns = append(ctns, c.addContainer(h))
	}
	c.pingMatrix(ctns)

	h1 := c.hosts()[0]
	own := infos[h1.Name].Subnet
	key := leaseKey(own)
	before, err := etcdKV(t, c.etcd, key)
	if err != nil || len(before.Kvs) != 1 {
		t.Fatalf("h1's key %s: %v, %v", key, before, err)
	}
	honest := before.Kvs[0]
	pids := map[string]int{}
	for _, h := range c.hosts() {
		pids[h.Name] = c.agent(h).PID()
	}

	for i, spoil := range []struct {
		name string
		do   func()
	}{
		{"garbage value", func() { c.put(key, "garbage") }},
		{"empty object", func() { c.put(key, "{}") }},
		{"key deleted", func() { deleteKey(t, c.etcd, key) }},
	} {
		spoil.do()
		await.Eventually(t, 60*time.Second, fmt.Sprintf("%s: h1's lease written back", spoil.name), func() error {
			resp, err := etcdKV(t, c.etcd, key)
			if err != nil {
				return err
			}
			if len(resp.Kvs) != 1 || string(resp.Kvs[0].Value) != string(honest.Value) || resp.Kvs[0].Lease != honest.Lease {
				return fmt.Errorf("key %s is %v", key, resp.Kvs)
			}
			r, err := c.statusReport(h1)
			if err != nil {
				return err
			}
			if r.Lease == nil || r.Lease.Restores != uint64(i+1) {
				return fmt.Errorf("status lease %+v; want %d restores", r.Lease, i+1)
			}
			return nil
		})
	}

	// The host kept its subnet, its files and its etcd lease: nothing
	// re-acquired, no agent restarted.
	r, err := c.statusReport(h1)
	if err != nil {
		t.Fatal(err)
	}
	if r.Lease.Subnet != own.String() || r.Lease.Losses != 0 {
		t.Errorf("h1's status lease %+v; want subnet %s and no loss", r.Lease, own)
	}
	if info, err := subnetfile.Read(h1.Dir + "/subnet.env"); err != nil || info.Subnet != infos[h1.Name].Subnet {
		t.Errorf("h1's subnet file: %+v, %v; want subnet %s", info, err, own)
	}
	if got := metric(t, h1, "netagent_lease_restores_total"); got != 3 {
		t.Errorf("netagent_lease_restores_total = %v, want 3", got)
	}
	for _, h := range c.hosts() {
		if p := c.agent(h); p.Exited() || p.PID() != pids[h.Name] {
			t.Errorf("%s's agent restarted or exited", h.Name)
		}
	}
	// The others program h1 again (a deleted key is a removed peer for a
	// moment): the full matrix passes.
	await.Eventually(t, 60*time.Second, "every host ready", func() error {
		for _, h := range c.hosts() {
			if err := statusReady(c, h); err != nil {
				return err
			}
		}
		return nil
	})
	c.pingMatrix(ctns)
}

// TestDangerousConfigRefused (issue 13, scenario 5): while a 3-host vxlan
// cluster serves 10.5.0.0/16, an administrator writes configs that would
// cut hosts off: loopback and multicast networks, the underlay's own
// subnet, a backend port that is the probe port. Every agent refuses each
// with the same message as `netagent config check`, says so in its status,
// keeps serving the config in force, and the full ping matrix passes.
func TestDangerousConfigRefused(t *testing.T) {
	t.Parallel()
	c := newCluster(t, clusterOptions{Hosts: 3, Config: vxlanConfig})
	c.startAll()
	c.awaitReady()
	var ctns []*container
	for _, h := range c.hosts() {
		ctns = append(ctns, c.addContainer(h))
	}
	c.pingMatrix(ctns)
	h1 := c.hosts()[0]
	underlay := h1.Underlay.Masked()
	inside := netip.PrefixFrom(underlay.Addr(), underlay.Bits()+2).Masked()
	pids := map[string]int{}
	for _, h := range c.hosts() {
		pids[h.Name] = c.agent(h).PID()
	}

	for _, tt := range []struct {
		name, config string
		// message is what the agents say (and config check, refusing or
		// warning).
		message string
		// checkRefuses: config check on a host refuses it (else it warns).
		checkRefuses bool
	}{
		{"loopback", `{"Network":"127.0.0.0/8","Backend":{"Type":"vxlan"}}`, "Network 127.0.0.0/8 overlaps 127.0.0.0/8, loopback", true},
		{"multicast", `{"Network":"224.0.0.0/4","Backend":{"Type":"vxlan"}}`, "Network 224.0.0.0/4 overlaps 224.0.0.0/4, multicast", true},
		{"probe port", `{"Network":"10.5.0.0/16","SubnetMax":"10.5.199.0","Backend":{"Type":"vxlan","Port":8473}}`,
			"Backend.Port 8473 is the UDP port of the probe responder (--probe-port 8473)", true},
		{"underlay's subnet", fmt.Sprintf(`{"Network":%q,"Backend":{"Type":"vxlan"}}`, inside.String()),
			fmt.Sprintf("Network %s overlaps %s, a subnet of eth0 (the underlay)", inside, underlay), false},
	} {
		// `netagent config check` on h1 says the same as the agents.
		file := h1.Dir + "/dangerous.json"
		ownWriteFile(t, file, tt.config)
		out, err := c.runSplitText(h1.NS, binaries(t)["./cmd/netagent"], "config", "check", file)
		if (err != nil) != tt.checkRefuses || !strings.Contains(out, tt.message) {
			t.Errorf("%s: config check: %v: %s; want refused=%v with %q", tt.name, err, out, tt.checkRefuses, tt.message)
		}

		c.put(prefix+"/config", tt.config)
		for _, h := range c.hosts() {
			await.Eventually(t, 60*time.Second, fmt.Sprintf("%s: %s's status names the refused config", tt.name, h.Name), func() error {
				r, err := c.statusReport(h)
				if err != nil {
					return err
				}
				for _, e := range r.RecentErrors {
					if strings.Contains(e.Message, tt.message) {
						if r.Network == nil || r.Network.Network != "10.5.0.0/16" || !r.Ready {
							return fmt.Errorf("network in force %+v, ready %v; want 10.5.0.0/16, ready", r.Network, r.Ready)
						}
						return nil
					}
				}
				return fmt.Errorf("recent errors %+v", r.RecentErrors)
			})
		}
		if tt.name == "underlay's subnet" {
			// Nothing of the refused network reached the kernel: the
			// connected route to the underlay stands.
			for _, h := range c.hosts() {
				out := c.mustExec(h.NS, "ip", "route", "show", inside.String())
				if strings.Contains(out, "flannel") {
					t.Errorf("%s: route %s", h.Name, out)
				}
			}
		}
		c.pingMatrix(ctns)
	}
	for _, h := range c.hosts() {
		if p := c.agent(h); p.Exited() || p.PID() != pids[h.Name] {
			t.Errorf("%s's agent restarted or exited", h.Name)
		}
	}
	// A good config again is taken as before (the pipeline was never torn
	// down: it is the same config).
	c.put(prefix+"/config", vxlanConfig)
	c.pingMatrix(ctns)
}

// TestStatusStoppedAgent (issue 13, scenario 8): `netagent status` against
// an agent stopped with SIGSTOP (its socket accepts, nobody answers) says
// it is not answering, not that it is not running; exit status 1 either
// way. After SIGCONT it answers again.
func TestStatusStoppedAgent(t *testing.T) {
	t.Parallel()
	c := newCluster(t, clusterOptions{Hosts: 1, Config: vxlanConfig})
	c.startAll()
	c.awaitReady()
	h := c.hosts()[0]
	p := c.agent(h)
	if err := p.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Signal(syscall.SIGCONT) })
	out, err := c.runSplitText(h.NS, binaries(t)["./cmd/netagent"], "status", "--status-socket="+statusSocket(h))
	if code := ownExitCode(err); code != 1 || !strings.Contains(out, "netagent is NOT ANSWERING on "+statusSocket(h)) || strings.Contains(out, "not running") {
		t.Errorf("status of a stopped agent: exit %d: %s; want exit 1, not answering", code, lastLines(out, 5))
	}
	if err := p.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	await.Eventually(t, 60*time.Second, "the agent answers again", func() error {
		_, err := c.statusReport(h)
		return err
	})

	// Stopped for good: not running.
	if err := p.Stop(10 * time.Second); err != nil {
		t.Logf("stop: %v", err)
	}
	out, err = c.runSplitText(h.NS, binaries(t)["./cmd/netagent"], "status", "--status-socket="+statusSocket(h))
	if code := ownExitCode(err); code != 1 || !strings.Contains(out, "netagent is not running") {
		t.Errorf("status without an agent: exit %d: %s; want exit 1, not running", code, lastLines(out, 5))
	}
}

// ownWriteFile writes a file the test reads back (a config for config
// check).
func ownWriteFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

// ownExitCode is the exit status of a command's error (0 for nil, -1 when
// it did not exit).
func ownExitCode(err error) int {
	var ee *exec.ExitError
	switch {
	case err == nil:
		return 0
	case errors.As(err, &ee):
		return ee.ExitCode()
	}
	return -1
}
