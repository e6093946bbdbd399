package test

import (
	"context"
	"encoding/binary"
	"fmt"
	"net/netip"
	"runtime"
	"strings"
	"testing"
	"time"
	"unsafe"

	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/netagent/netagent/agent"
	"github.com/netagent/netagent/internal/await"
	"github.com/netagent/netagent/internal/lab"
	"github.com/netagent/netagent/probe"
)

// Scenarios 4 and 9 of docs/reliability.md: the probe responder.

// probeResponderArgs: frequent probes, /healthz and /metrics.
var probeResponderArgs = append(append([]string{}, probeArgs...), healthzArgs...)

// inNS runs fn on a thread switched into the lab namespace ns; sockets fn
// makes stay in ns.
func inNS(t *testing.T, ns string, fn func() error) {
	t.Helper()
	target, err := netns.GetFromPath(lab.NSPath(ns))
	if err != nil {
		t.Fatal(err)
	}
	defer target.Close()
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			errc <- err
			return
		}
		defer orig.Close()
		if err := netns.Set(target); err != nil {
			errc <- err
			return
		}
		ferr := fn()
		if err := netns.Set(orig); err != nil {
			// The thread stays locked: the runtime ends it.
			errc <- err
			return
		}
		runtime.UnlockOSThread()
		errc <- ferr
	}()
	if err := <-errc; err != nil {
		t.Fatalf("in %s: %v", ns, err)
	}
}

// occupyProbePort binds a UDP socket to addr:8473 in ns, so that no
// responder can bind the port there, and connects it to peer:9, so that
// it takes none of the probes either (a connected socket receives only
// from its peer): they are answered with ICMP port unreachable, as when
// nothing listens. (A socket bound to the wildcard address would do for
// the bind, but connecting sets its local address, freeing the port for
// the others.) free closes it.
func occupyProbePort(t *testing.T, ns string, addr, peer netip.Addr) (free func()) {
	t.Helper()
	fd := -1
	inNS(t, ns, func() error {
		var err error
		if fd, err = unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0); err != nil {
			return err
		}
		if err := unix.Bind(fd, &unix.SockaddrInet4{Port: probe.DefaultPort, Addr: addr.As4()}); err != nil {
			return err
		}
		return unix.Connect(fd, &unix.SockaddrInet4{Port: 9, Addr: peer.As4()})
	})
	closed := false
	free = func() {
		if !closed {
			closed = true
			unix.Close(fd)
		}
	}
	t.Cleanup(free)
	return free
}

// responderOf is h's responder report of family ("IPv4", "IPv6").
func responderOf(r *agent.Report, family string) (agent.ResponderReport, error) {
	for _, rr := range r.Probe.Responders {
		if rr.Family == family {
			return rr, nil
		}
	}
	return agent.ResponderReport{}, fmt.Errorf("no %s responder in %+v", family, r.Probe)
}

// checkOf is the check named name of /healthz's answer.
func checkOf(hz healthz, name string) (agent.Check, bool) {
	for _, c := range hz.Checks {
		if c.Name == name {
			return c, true
		}
	}
	return agent.Check{}, false
}

// TestProbeResponderSubnetChange (scenario 4): a host's subnet changes
// while its agent runs (its etcd lease revoked, a reservation for its
// public IP waiting elsewhere); the agent restarts its probes for the new
// subnet and its responder binds at the first attempt, no host reports it
// unreachable, and every container reaches every other.
func TestProbeResponderSubnetChange(t *testing.T) {
	t.Parallel()
	c := newCluster(t, clusterOptions{Hosts: 3, Config: vxlanConfig, AgentArgs: probeResponderArgs})
	infos := c.startAll()
	c.awaitReady()
	h1, h2, h3 := c.hosts()[0], c.hosts()[1], c.hosts()[2]
	old := infos[h2.Name].Subnet
	for _, h := range []*lab.Host{h1, h3} {
		c.awaitPeer(t, h, old.String(), "reachable", probeReachable)
	}

	// The new subnet: a reservation naming h2's public IP, which h2 takes
	// when it re-acquires (README, Leases), writing its own VtepMAC.
	moved := netip.MustParsePrefix("10.5.197.0/24")
	for _, info := range infos {
		if info.Subnet == moved {
			moved = netip.MustParsePrefix("10.5.198.0/24")
		}
	}
	mine := hostLeases(t, c.etcd)[old]
	putLease(t, c.etcd, leaseKey(moved), fakePeer{moved, mine.PublicIP, "0a:00:00:00:c5:01"}.value(), 0)
	id, _ := agentLeaseID(t, c.etcd, leaseKey(old))
	if id == 0 {
		t.Fatalf("h2's lease %s has no etcd lease", old)
	}
	ctx, cancel := context.WithTimeout(c.ctx, 10*time.Second)
	if _, err := c.etcd.Revoke(ctx, id); err != nil {
		t.Fatal(err)
	}
	cancel()
	await.Eventually(t, time.Minute, "h2 moved to "+moved.String(), func() error {
		r, err := c.statusReport(h2)
		if err != nil {
			return err
		}
		if r.Lease == nil || r.Lease.Subnet != moved.String() {
			return fmt.Errorf("lease %+v", r.Lease)
		}
		return nil
	})

	// h2's responder serves for the new subnet, and never failed.
	await.Eventually(t, probeWithin, "h2's responder serving after the move", func() error {
		r, err := c.statusReport(h2)
		if err != nil {
			return err
		}
		rr, err := responderOf(r, "IPv4")
		if err != nil {
			return err
		}
		if !rr.Serving || rr.Failures != 0 || r.Probe.State != "probing" {
			return fmt.Errorf("probe state %q, responder %+v; want probing, serving, no failure", r.Probe.State, rr)
		}
		return nil
	})
	if code, hz, err := getHealthz(t, h2); err != nil || code != 200 {
		t.Errorf("h2 /healthz after the move: %d %+v %v", code, hz, err)
	} else if chk, ok := checkOf(hz, agent.CheckProbe); !ok || !chk.OK {
		t.Errorf("h2 /healthz has no passing %q check: %+v", agent.CheckProbe, hz.Checks)
	}
	if n := metric(t, h2, agent.MetricResponderFailures); n != 0 {
		t.Errorf("%s = %v on h2, want 0: the restarted responder could not bind", agent.MetricResponderFailures, n)
	}

	// Every other host finds it reachable at its new subnet, and every
	// host's check passes.
	for _, h := range []*lab.Host{h1, h3} {
		c.awaitPeer(t, h, moved.String(), "reachable", probeReachable)
	}
	for _, h := range c.hosts() {
		await.Eventually(t, probeWithin, h.Name+"'s status --check passes", func() error {
			if errOut, ok := c.statusCheck(h); !ok {
				return fmt.Errorf("%s", errOut)
			}
			return nil
		})
	}
	c.pingMatrix([]*container{c.addContainer(h1), c.addContainer(h2), c.addContainer(h3)})
}

// TestProbeResponderCannotBind (scenario 4, the responder's failure
// itself): another socket holds the probe port on h3 when its agent
// starts. h3's /healthz and status name the error, the other hosts report
// h3 no-responder (not underlay-unreachable), traffic passes; once the
// port is free the responder serves without a restart and every check
// recovers.
func TestProbeResponderCannotBind(t *testing.T) {
	t.Parallel()
	c := newCluster(t, clusterOptions{Hosts: 3, Config: vxlanConfig, AgentArgs: probeResponderArgs})
	h1, h2, h3 := c.hosts()[0], c.hosts()[1], c.hosts()[2]
	free := occupyProbePort(t, h3.NS, h3.Underlay.Addr(), h1.Underlay.Addr())
	infos := c.startAll()
	c.awaitReady()
	sn3 := infos[h3.Name].Subnet.String()

	await.Eventually(t, probeWithin, "h3's /healthz names the responder's failure", func() error {
		code, hz, err := getHealthz(t, h3)
		if err != nil {
			return err
		}
		chk, ok := checkOf(hz, agent.CheckProbe)
		if code != 503 || !ok || chk.OK || !strings.Contains(chk.Why, "address already in use") {
			return fmt.Errorf("/healthz %d %+v", code, hz)
		}
		return nil
	})
	r, err := c.statusReport(h3)
	if err != nil {
		t.Fatal(err)
	}
	rr, err := responderOf(r, "IPv4")
	if err != nil {
		t.Fatal(err)
	}
	if rr.Serving || !strings.Contains(rr.Error, "address already in use") || rr.Failures == 0 ||
		!strings.HasPrefix(r.Probe.State, "responder-failed") {
		t.Errorf("h3 probe state %q, responder %+v; want responder-failed naming the error", r.Probe.State, rr)
	}
	if n := metricLabeled(mustScrape(t, h3), agent.MetricResponderServing, "family", "ipv4"); n != 0 {
		t.Errorf("%s{family=ipv4} = %v on h3, want 0", agent.MetricResponderServing, n)
	}

	for _, h := range []*lab.Host{h1, h2} {
		p := c.awaitPeer(t, h, sn3, "no-responder", probeCause(probe.CauseNoResponder))
		t.Logf("%s reports h3: %s (%s)", h.Name, p.Probe.Cause, p.Probe.Detail)
		if n := metricLabeled(mustScrape(t, h), agent.MetricProbeFailures, "family", "ipv4", "cause", string(probe.CauseNoResponder)); n <= 0 {
			t.Errorf("%s: %s{cause=no-responder} = %v, want > 0", h.Name, agent.MetricProbeFailures, n)
		}
	}
	// The data plane does not depend on the responder.
	ctns := []*container{c.addContainer(h1), c.addContainer(h2), c.addContainer(h3)}
	c.pingMatrix(ctns)

	free()
	await.Eventually(t, time.Minute, "h3's responder serving once the port is free", func() error {
		code, hz, err := getHealthz(t, h3)
		if err != nil {
			return err
		}
		if chk, ok := checkOf(hz, agent.CheckProbe); code != 200 || !ok || !chk.OK {
			return fmt.Errorf("/healthz %d %+v", code, hz)
		}
		return nil
	})
	for _, h := range []*lab.Host{h1, h2} {
		c.awaitPeer(t, h, sn3, "reachable", probeReachable)
	}
	for _, h := range c.hosts() {
		await.Eventually(t, probeWithin, h.Name+"'s status --check passes", func() error {
			if errOut, ok := c.statusCheck(h); !ok {
				return fmt.Errorf("%s", errOut)
			}
			return nil
		})
	}
	if n := metric(t, h3, agent.MetricResponderFailures); n <= 0 {
		t.Errorf("%s = %v on h3, want > 0", agent.MetricResponderFailures, n)
	}
	c.pingMatrix(ctns)
}

// probeRequest is a 24-byte probe request with sequence number seq (the
// wire format of probe/wire.go).
func probeRequest(seq uint64) []byte {
	b := make([]byte, 24)
	copy(b, "NAPB")
	b[4], b[5] = 1, 1
	binary.BigEndian.PutUint16(b[6:], 24)
	binary.BigEndian.PutUint64(b[8:], seq)
	return b
}

// sendFrom sends b from fd to dst:8473 with source address src
// (IP_PKTINFO), whatever fd is bound to.
func sendFrom(fd int, b []byte, src, dst netip.Addr) error {
	oob := make([]byte, unix.CmsgSpace(unix.SizeofInet4Pktinfo))
	h := (*unix.Cmsghdr)(unsafe.Pointer(&oob[0]))
	h.Level, h.Type = unix.IPPROTO_IP, unix.IP_PKTINFO
	h.SetLen(unix.CmsgLen(unix.SizeofInet4Pktinfo))
	pi := (*unix.Inet4Pktinfo)(unsafe.Pointer(&oob[unix.CmsgLen(0)]))
	pi.Spec_dst = src.As4()
	_, err := unix.SendmsgN(fd, b, oob, &unix.SockaddrInet4{Port: probe.DefaultPort, Addr: dst.As4()}, 0)
	return err
}

// TestProbeResponderForgedSource (scenario 9): a probe whose source is an
// address of no lease (here an extra address on h1's underlay interface,
// standing for a forged one) gets no reply from h2's responder and is
// counted as refused, in status and metrics; a probe from h1's public IP
// sent after it on the same socket is answered, and is the only answer.
func TestProbeResponderForgedSource(t *testing.T) {
	t.Parallel()
	c := newCluster(t, clusterOptions{Hosts: 2, Config: vxlanConfig, AgentArgs: probeResponderArgs})
	infos := c.startAll()
	c.awaitReady()
	h1, h2 := c.hosts()[0], c.hosts()[1]
	c.awaitPeer(t, h1, infos[h2.Name].Subnet.String(), "reachable", probeReachable)
	if r, err := c.statusReport(h1); err == nil {
		t.Logf("h1 sources refused so far: %+v", r.Probe.Responders)
	}
	stranger := netip.MustParseAddr("192.168.77.233")
	for _, h := range c.hosts() {
		if h.Underlay.Addr() == stranger {
			t.Fatalf("%s has the stranger's address %s", h.Name, stranger)
		}
	}
	c.mustExec(h1.NS, "ip", "addr", "add", stranger.String()+"/24", "dev", "eth0")
	h2Public := h2.Underlay.Addr()
	// What h2 refused before (a peer's probes arriving before its lease
	// reached h2's sources): h1 was found reachable, so h2 answers it now.
	r, err := c.statusReport(h2)
	if err != nil {
		t.Fatal(err)
	}
	before, err := responderOf(r, "IPv4")
	if err != nil {
		t.Fatal(err)
	}

	fd := -1
	inNS(t, h1.NS, func() error {
		var err error
		if fd, err = unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0); err != nil {
			return err
		}
		// Bounds a hang only: the answer is read below after it was
		// counted as sent.
		if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &unix.Timeval{Sec: 60}); err != nil {
			return err
		}
		return unix.Bind(fd, &unix.SockaddrInet4{})
	})
	t.Cleanup(func() { unix.Close(fd) })

	// The forged probe first, then an honest one on the same socket: the
	// responder takes them in this order on its public IP's socket, so an
	// answer to the forged one would be read before the honest one's.
	if err := sendFrom(fd, probeRequest(9001), stranger, h2Public); err != nil {
		t.Fatal(err)
	}
	await.Eventually(t, time.Minute, "h2 counts the forged probe refused", func() error {
		r, err := c.statusReport(h2)
		if err != nil {
			return err
		}
		rr, err := responderOf(r, "IPv4")
		if err != nil {
			return err
		}
		if rr.Refused != before.Refused+1 {
			return fmt.Errorf("responder %+v, want %d refused", rr, before.Refused+1)
		}
		return nil
	})
	if err := sendFrom(fd, probeRequest(9002), h1.Underlay.Addr(), h2Public); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 128)
	n, from, err := unix.Recvfrom(fd, buf, 0)
	if err != nil {
		t.Fatalf("no answer to the honest probe: %v", err)
	}
	if n != 24 || string(buf[:4]) != "NAPB" || buf[5] != 2 {
		t.Fatalf("answer %x from %v is not a probe reply", buf[:n], from)
	}
	if seq := binary.BigEndian.Uint64(buf[8:]); seq != 9002 {
		t.Fatalf("first answer is to probe %d, want 9002: the forged probe was answered", seq)
	}
	if v := metricLabeled(mustScrape(t, h2), agent.MetricResponderRequests, "result", "refused"); v != float64(before.Refused+1) {
		t.Errorf("%s{result=refused} = %v on h2, want %d", agent.MetricResponderRequests, v, before.Refused+1)
	}
	c.pingMatrix([]*container{c.addContainer(h1), c.addContainer(h2)})
}
