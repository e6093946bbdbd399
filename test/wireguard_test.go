package test

import (
	"bytes"
	"context"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/netagent/netagent/agent"
	"github.com/netagent/netagent/internal/await"
	"github.com/netagent/netagent/internal/lab"
)

// The wireguard backend, end to end, on the userspace implementation (the
// kernel of the machines this runs on may lack WireGuard; the choice
// between the two is unit-tested in backend/wireguard).

const (
	wgConfig     = `{"Network":"10.5.0.0/16","Backend":{"Type":"wireguard","PersistentKeepaliveInterval":5}}`
	wgDualConfig = `{"Network":"10.5.0.0/16","EnableIPv6":true,"IPv6Network":"fc00:5::/48","Backend":{"Type":"wireguard"}}`
	wgV6Config   = `{"EnableIPv4":false,"EnableIPv6":true,"IPv6Network":"fc00:5::/48","Backend":{"Type":"wireguard"}}`
	wgPort       = 51820
)

// newWGCluster is a cluster whose agents run the userspace WireGuard, each
// host with its own key file and UAPI socket directory under its state
// directory (the defaults are shared by every host of the lab).
func newWGCluster(t *testing.T, opts clusterOptions) *cluster {
	t.Helper()
	opts.AgentArgs = append(append(opts.AgentArgs, "--wireguard-impl=userspace", "--resync-interval=2s", "--probe-interval=1s"), healthzArgs...)
	opts.Env = func(h *lab.Host) []string {
		return []string{"WIREGUARD_KEY_FILE=" + filepath.Join(h.Dir, "wgkey"), "NETAGENT_WIREGUARD_SOCKET_DIR=" + wgSocketDir(h)}
	}
	return newCluster(t, opts)
}

func wgSocketDir(h *lab.Host) string { return filepath.Join(h.Dir, "wireguard") }

// wgShow runs `wg show <args>` for h: in h's namespace and in a mount
// namespace of its own where /run is a fresh tmpfs with h's socket
// directory mounted on /run/wireguard, where wg looks. The machine's own
// /run/wireguard is never touched.
func (c *cluster) wgShow(h *lab.Host, args ...string) (string, error) {
	dir := wgSocketDir(h)
	if strings.HasPrefix(dir, "/run/") || strings.HasPrefix(dir, "/var/run/") {
		c.t.Fatalf("socket directory %s would be hidden by the tmpfs on /run", dir)
	}
	script := fmt.Sprintf("mount -t tmpfs tmpfs /run && mkdir /run/wireguard && mount --bind %s /run/wireguard && exec wg show %s",
		dir, strings.Join(args, " "))
	out, err := c.exec(h.NS, "unshare", "-m", "--propagation", "private", "sh", "-c", script)
	return string(out), err
}

// capture is a tcpdump on a host's underlay interface, writing every
// packet whole to a file.
type capture struct {
	cmd  *exec.Cmd
	file string
	out  lockedBuffer
	stop func()
}

// lockedBuffer is a buffer a command writes while the test reads it.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// startCapture starts tcpdump on h's eth0 and waits until it listens. It
// is bounded by a timeout and stopped by stop (or the test's cleanup).
func (c *cluster) startCapture(h *lab.Host) *capture {
	c.t.Helper()
	cp := &capture{file: filepath.Join(c.t.TempDir(), h.Name+".pcap")}
	ctx, cancel := context.WithTimeout(c.ctx, 2*time.Minute)
	cp.cmd = exec.CommandContext(ctx, "ip", "netns", "exec", h.NS, "tcpdump", "-i", "eth0", "-n", "-U", "-s", "0", "-w", cp.file)
	cp.cmd.Stdout, cp.cmd.Stderr = &cp.out, &cp.out
	if err := cp.cmd.Start(); err != nil {
		cancel()
		c.t.Fatalf("tcpdump: %v", err)
	}
	done := make(chan struct{})
	go func() { cp.cmd.Wait(); cancel(); close(done) }()
	c.t.Cleanup(func() { cp.cmd.Process.Kill(); <-done })
	await.Eventually(c.t, 30*time.Second, "tcpdump listening on "+h.Name, func() error {
		if !strings.Contains(cp.outString(), "listening on") {
			return fmt.Errorf("tcpdump says %q", cp.outString())
		}
		return nil
	})
	cp.stop = func() {
		cp.cmd.Process.Signal(syscall.SIGINT)
		<-done
	}
	return cp
}

func (cp *capture) outString() string { return cp.out.String() }

// countPackets reads the capture back and counts the packets filter
// matches (one line each).
func (c *cluster) countPackets(cp *capture, filter string) int {
	c.t.Helper()
	out, err := exec.Command("tcpdump", "-r", cp.file, "-n", filter).Output()
	if err != nil {
		c.t.Fatalf("tcpdump -r %s %s: %v", cp.file, filter, err)
	}
	text := strings.TrimSpace(string(out))
	if text == "" {
		return 0
	}
	return strings.Count(text, "\n") + 1
}

func TestWireGuardMatrix(t *testing.T) {
	t.Parallel()
	c := newWGCluster(t, clusterOptions{Hosts: 3, Config: wgConfig})
	infos := c.startAll()
	c.awaitReady()
	for name, info := range infos {
		if info.MTU != lab.UnderlayMTU-80 {
			t.Errorf("%s: FLANNEL_MTU %d, want %d (underlay MTU - 80)", name, info.MTU, lab.UnderlayMTU-80)
		}
	}
	var ctns []*container
	for _, h := range c.hosts() {
		ctns = append(ctns, c.addContainer(h))
	}
	h1 := c.hosts()[0]

	// Everything h1 sends and receives on the underlay while containers
	// talk: WireGuard's UDP, never a container's address or payload.
	cp := c.startCapture(h1)
	const pattern = "6e6574616765" // "netage", repeated in every echo request
	for _, dst := range ctns[1:] {
		if _, err := c.lab.Ping(c.ctx, ctns[0].NS, dst.IP, lab.PingOptions{Count: 3}); err != nil {
			t.Errorf("%s -> %s: %v", ctns[0].NS, dst.IP, err)
		}
		if _, err := c.exec(ctns[0].NS, "ping", "-n", "-q", "-c", "3", "-i", "0.2", "-W", "1", "-p", pattern, dst.IP.String()); err != nil {
			t.Errorf("%s -> %s with a pattern: %v", ctns[0].NS, dst.IP, err)
		}
	}
	c.pingMatrix(ctns)
	cp.stop()
	if n := c.countPackets(cp, "net 10.5.0.0/16"); n != 0 {
		t.Errorf("%d packets on %s's underlay carry an overlay address in clear", n, h1.Name)
	}
	if n := c.countPackets(cp, fmt.Sprintf("udp port %d", wgPort)); n == 0 {
		t.Errorf("no WireGuard packet (UDP %d) on %s's underlay", wgPort, h1.Name)
	}
	if n := c.countPackets(cp, fmt.Sprintf("udp and not port %d and not port 8473", wgPort)); n != 0 {
		t.Errorf("%d UDP packets on %s's underlay are neither WireGuard's nor the probes'", n, h1.Name)
	}
	raw, err := os.ReadFile(cp.file)
	if err != nil {
		t.Fatal(err)
	}
	clear, _ := hex.DecodeString(strings.Repeat(pattern, 4))
	if bytes.Contains(raw, clear) {
		t.Errorf("the ping payload shows in clear on %s's underlay", h1.Name)
	}

	// wg show answers for each host, through that host's UAPI socket.
	out, err := c.wgShow(h1, "flannel-wg")
	if err != nil || strings.Count(out, "peer: ") != 2 || !strings.Contains(out, "latest handshake") {
		t.Errorf("wg show flannel-wg on %s: %v\n%s\nwant 2 peers with a handshake", h1.Name, err, out)
	}

	// Status: the implementation and why, the public key, and per peer
	// the handshake, bytes and endpoint.
	r, err := c.statusReport(h1)
	if err != nil {
		t.Fatal(err)
	}
	if b := r.Backend; b == nil || len(b.WireGuard) != 1 || b.WireGuard[0].Impl != "userspace" || b.WireGuard[0].PublicKey == "" ||
		!strings.Contains(out, "public key: "+b.WireGuard[0].PublicKey) {
		t.Errorf("status backend %+v: want the userspace device with the public key wg shows", r.Backend)
	}
	for _, p := range r.Peers {
		if w := p.WireGuard; w == nil || w.LatestHandshake == nil || w.RxBytes == 0 || !strings.HasSuffix(w.Endpoint, fmt.Sprintf(":%d", wgPort)) {
			t.Errorf("status peer %s: %+v, want a handshake, bytes and the endpoint", p.Subnet, p.WireGuard)
		}
	}
	text := c.mustExec(h1.NS, binaries(t)["./cmd/netagent"], "status", "--status-socket="+statusSocket(h1))
	if !strings.Contains(text, "wireguard peers:") || !strings.Contains(text, "userspace") {
		t.Errorf("netagent status:\n%s\nwant the device and the wireguard peers", text)
	}
	if m := metric(t, h1, "netagent_wireguard_peers_without_handshake"); m != 0 {
		t.Errorf("%v peers without a handshake, want 0", m)
	}
}

func TestWireGuardDualStack(t *testing.T) {
	t.Parallel()
	c := newWGCluster(t, clusterOptions{Hosts: 2, IPv6: lab.DualStack, Config: wgDualConfig})
	ctns := c.startDual()
	c.pingMatrixFamilies(ctns)
	h1 := c.hosts()[0]
	for _, dev := range []string{"flannel-wg", "flannel-wg-v6"} {
		if out, err := c.wgShow(h1, dev); err != nil || !strings.Contains(out, "latest handshake") {
			t.Errorf("wg show %s: %v\n%s", dev, err, out)
		}
	}
	if out := c.mustExec(h1.NS, "wg", "--version"); out == "" {
		t.Error("wg --version printed nothing")
	}
}

// TestWireGuardDualStackOneDevice: Mode auto on a dual-stack network puts
// both families on flannel-wg alone (flannel's single device): containers
// reach each other over both, each peer's AllowedIPs hold both subnets.
func TestWireGuardDualStackOneDevice(t *testing.T) {
	t.Parallel()
	c := newWGCluster(t, clusterOptions{Hosts: 2, IPv6: lab.DualStack,
		Config: strings.Replace(wgDualConfig, `"Type":"wireguard"`, `"Type":"wireguard","Mode":"auto"`, 1)})
	ctns := c.startDual()
	c.pingMatrixFamilies(ctns)
	h1 := c.hosts()[0]
	out, err := c.wgShow(h1, "flannel-wg")
	if err != nil || !strings.Contains(out, "latest handshake") {
		t.Errorf("wg show flannel-wg: %v\n%s", err, out)
	}
	allowed := ""
	for _, line := range strings.Split(out, "\n") {
		if a, ok := strings.CutPrefix(strings.TrimSpace(line), "allowed ips:"); ok {
			allowed = a
		}
	}
	if !strings.Contains(allowed, "10.5.") || !strings.Contains(allowed, "fc00:5:") {
		t.Errorf("allowed ips %q: want the peer's subnets of both families on one peer", allowed)
	}
	if out, err := c.wgShow(h1, "flannel-wg-v6"); err == nil {
		t.Errorf("wg show flannel-wg-v6 answered: want one device\n%s", out)
	}
}

func TestWireGuardIPv6Only(t *testing.T) {
	t.Parallel()
	c := newWGCluster(t, clusterOptions{Hosts: 2, IPv6: lab.IPv6Only, Config: wgV6Config})
	ctns := c.startDual()
	c.pingMatrixFamilies(ctns)
}

// TestWireGuardFaults: a device deleted and a peer removed by hand come
// back; a lease removed takes its peer away; hostile leases are refused
// or, for a key nobody holds, reported without a handshake; an agent
// killed and restarted brings traffic back (gap logged).
func TestWireGuardFaults(t *testing.T) {
	t.Parallel()
	c := newWGCluster(t, clusterOptions{Hosts: 2, Config: wgConfig})
	c.startAll()
	c.awaitReady()
	h1, h2 := c.hosts()[0], c.hosts()[1]
	c1, c2 := c.addContainer(h1), c.addContainer(h2)
	if err := c.ping(c1.NS, c2.IP, lab.PingOptions{Count: 2}); err != nil {
		t.Fatal(err)
	}
	reach := func(what string) {
		t.Helper()
		await.Eventually(t, time.Minute, what, func() error { return c.ping(c1.NS, c2.IP, lab.PingOptions{Count: 1}) })
	}

	// The device deleted.
	c.mustExec(h1.NS, "ip", "link", "del", "flannel-wg")
	reach("c2 reachable after flannel-wg was deleted on h1")

	// The peer removed with wg set.
	r, err := c.statusReport(h1)
	if err != nil || len(r.Peers) != 1 || r.Peers[0].WireGuard == nil {
		t.Fatalf("status: %v %+v", err, r)
	}
	key2 := r.Peers[0].WireGuard.PublicKey
	dir := wgSocketDir(h1)
	c.mustExec(h1.NS, "unshare", "-m", "--propagation", "private", "sh", "-c",
		fmt.Sprintf("mount -t tmpfs tmpfs /run && mkdir /run/wireguard && mount --bind %s /run/wireguard && wg set flannel-wg peer %s remove", dir, key2))
	await.Eventually(t, time.Minute, "h2's peer back on h1", func() error {
		out, err := c.wgShow(h1, "flannel-wg", "peers")
		if err != nil || !strings.Contains(out, key2) {
			return fmt.Errorf("wg show peers: %v: %q", err, out)
		}
		return nil
	})
	reach("c2 reachable after its peer was removed with wg set")

	// Hostile leases: a malformed key, a port 0, another host's key.
	// A well-formed key that no host holds, at h2's address (as if h2's
	// lease held a wrong key): programmed, never a handshake, and the
	// probes say so.
	wrongKey := fmt.Sprintf(`{"PublicIP":%q,"BackendType":"wireguard","BackendData":{"PublicKey":"%s","Port":51820}}`,
		h2.Underlay.Addr(), "Vw6cB3JdXqUcIaQbOHFr0vPJTjFbY0NqT6bqbQ0sZyc=")
	hostile := map[string]string{
		"10.5.201.0-24": `{"PublicIP":"192.168.77.51","BackendType":"wireguard","BackendData":{"PublicKey":"c2hvcnQ=","Port":51820}}`,
		"10.5.202.0-24": `{"PublicIP":"192.168.77.52","BackendType":"wireguard","BackendData":{"PublicKey":"Vw6cB3JdXqUcIaQbOHFr0vPJTjFbY0NqT6bqbQ0sZyc=","Port":0}}`,
		"10.5.203.0-24": fmt.Sprintf(`{"PublicIP":"192.168.77.53","BackendType":"wireguard","BackendData":{"PublicKey":"%s","Port":51820}}`, key2),
	}
	c.put(prefix+"/subnets/10.5.200.0-24", wrongKey)
	for k, v := range hostile {
		c.put(prefix+"/subnets/"+k, v)
	}
	await.Eventually(t, 2*time.Minute, "h1 refuses the key thief and reports the wrong key without a handshake", func() error {
		r, err := c.statusReport(h1)
		if err != nil {
			return err
		}
		if len(r.Refused) != 1 || r.Refused[0].Key != "10.5.203.0-24" || r.Refused[0].Reason != "identity" {
			return fmt.Errorf("refused %+v", r.Refused)
		}
		var subnets []string
		for _, p := range r.Peers {
			subnets = append(subnets, p.Subnet)
			if p.Subnet == "10.5.200.0/24" && (p.WireGuard == nil || p.WireGuard.LatestHandshake != nil ||
				p.Probe == nil || p.Probe.Cause != agent.CauseNoHandshake) {
				return fmt.Errorf("wrong key's peer %+v, probe %+v: want programmed, no handshake, probe cause %s", p.WireGuard, p.Probe, agent.CauseNoHandshake)
			}
		}
		if len(subnets) != 2 {
			return fmt.Errorf("peers %v: want h2 and the wrong key's", subnets)
		}
		return nil
	})
	out, _ := c.wgShow(h1, "flannel-wg", "allowed-ips")
	for _, bad := range []string{"10.5.201.0/24", "10.5.202.0/24", "10.5.203.0/24"} {
		if strings.Contains(out, bad) {
			t.Errorf("refused lease %s programmed on h1:\n%s", bad, out)
		}
	}
	if m := metric(t, h1, "netagent_wireguard_peers_without_handshake"); m != 1 {
		t.Errorf("%v peers without a handshake, want 1 (the wrong key's)", m)
	}
	for _, sub := range []string{"10.5.201.0/24", "10.5.202.0/24"} {
		await.Eventually(t, 30*time.Second, "h1 warns about "+sub, func() error {
			return logContains(c.agent(h1), "lease="+strings.ReplaceAll(sub, "/", "-")+` err="wireguard: BackendData`)
		})
	}

	// The lease removed: its peer and AllowedIPs go.
	deleteKey(t, c.etcd, prefix+"/subnets/10.5.200.0-24")
	await.Eventually(t, time.Minute, "the wrong key's peer gone from h1", func() error {
		out, err := c.wgShow(h1, "flannel-wg", "allowed-ips")
		if err != nil || strings.Contains(out, "10.5.200.0/24") {
			return fmt.Errorf("allowed-ips: %v\n%s", err, out)
		}
		return nil
	})

	// SIGKILL and restart: traffic comes back; the gap is logged.
	pr := startPing(t, c1.NS, c2.IP, 10*time.Millisecond, 3000)
	old := c.agent(h1)
	if err := old.Kill(); err != nil {
		t.Fatal(err)
	}
	<-old.Done()
	c.startAgent(h1)
	c.awaitReady()
	reach("c2 reachable after h1's agent was killed and restarted")
	pr.stop()
	res := pr.wait(t)
	if res.received == 0 {
		t.Fatalf("no reply at all across the restart")
	}
	t.Logf("userspace restart: %d of %d echo requests lost at 100/s (gap about %d ms)", len(res.lost), res.sent, len(res.lost)*10)
}
