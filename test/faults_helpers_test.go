package test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/netagent/netagent/internal/await"
	"github.com/netagent/netagent/internal/lab"
	"github.com/netagent/netagent/lease"
)

// Helpers of the fault, hostile-input and security tests.

// pingRun is a bounded ping running in the background between two
// containers, for counting lost packets across a fault.
type pingRun struct {
	cmd      *exec.Cmd
	start    time.Time
	interval time.Duration
	stopped  bool
	done     chan struct{}
	out      []byte
	err      error
}

// startPing pings dst from the namespace ns every interval, count times,
// in the background. Every echo request waits at most 1 s for its reply.
func startPing(t *testing.T, ns string, dst netip.Addr, interval time.Duration, count int) *pingRun {
	t.Helper()
	// The limit only bounds a hang: on a loaded machine ping falls behind
	// its interval, and a run killed by the limit has no summary to read.
	limit := 3*time.Duration(count)*interval + 2*time.Minute
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	// `ip netns exec` execs into ping: the PID is ping's. Each reply is
	// printed with its sequence number, so that a loss can be placed in
	// time.
	cmd := exec.CommandContext(ctx, "ip", "netns", "exec", ns,
		"ping", "-n", "-D", "-i", strconv.FormatFloat(interval.Seconds(), 'f', 3, 64),
		"-c", strconv.Itoa(count), "-W", "1", dst.String())
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	p := &pingRun{cmd: cmd, interval: interval, done: make(chan struct{})}
	if err := cmd.Start(); err != nil {
		cancel()
		t.Fatalf("ping: %v", err)
	}
	p.start = time.Now()
	go func() {
		defer cancel()
		defer close(p.done)
		p.err = cmd.Wait()
		p.out = out.Bytes()
	}()
	t.Cleanup(func() {
		cancel()
		<-p.done
	})
	return p
}

var (
	pingSummary = regexp.MustCompile(`(\d+) packets transmitted, (\d+) received`)
	pingReply   = regexp.MustCompile(`(?m)^\[(\d+)\.(\d{6})\] \d+ bytes from .*icmp_seq=(\d+) `)
)

// stop ends the ping early, as Ctrl-C would.
func (p *pingRun) stop() {
	p.stopped = true
	_ = p.cmd.Process.Signal(syscall.SIGINT)
}

// pingResult is what a pingRun saw.
type pingResult struct {
	sent, received int
	// lost holds the sequence numbers of the echo requests never
	// answered. When the run was stopped, the last request may have
	// been in flight: it is not counted.
	lost []int
	// sentAt estimates when request seq was sent.
	sentAt func(seq int) time.Time
}

// wait returns how many echo requests were sent and answered, and which
// were not.
func (p *pingRun) wait(t *testing.T) pingResult {
	t.Helper()
	<-p.done
	m := pingSummary.FindSubmatch(p.out)
	if m == nil {
		t.Fatalf("ping: %v: cannot read its summary:\n%s", p.err, p.out)
	}
	r := pingResult{}
	r.sent, _ = strconv.Atoi(string(m[1]))
	answered := map[int]time.Time{}
	for _, m := range pingReply.FindAllSubmatch(p.out, -1) {
		sec, _ := strconv.ParseInt(string(m[1]), 10, 64)
		usec, _ := strconv.ParseInt(string(m[2]), 10, 64)
		seq, _ := strconv.Atoi(string(m[3]))
		answered[seq] = time.Unix(sec, usec*1000)
	}
	// A request was sent about an interval after the one before it was
	// answered (replies take well under a millisecond here).
	r.sentAt = func(seq int) time.Time {
		for prev := seq - 1; prev > 0; prev-- {
			if at, ok := answered[prev]; ok {
				return at.Add(time.Duration(seq-prev) * p.interval)
			}
		}
		return p.start.Add(time.Duration(seq-1) * p.interval)
	}
	if p.stopped && r.sent > 0 {
		delete(answered, r.sent)
		r.sent--
	}
	for seq := 1; seq <= r.sent; seq++ {
		if _, ok := answered[seq]; ok {
			r.received++
		} else {
			r.lost = append(r.lost, seq)
		}
	}
	return r
}

// logMark is a position in an agent's log.
type logMark struct {
	path string
	off  int64
}

func markLog(t *testing.T, p *lab.Proc) logMark {
	t.Helper()
	st, err := os.Stat(p.LogPath)
	if err != nil {
		t.Fatal(err)
	}
	return logMark{p.LogPath, st.Size()}
}

// logSince returns the log lines written after m.
func logSince(t *testing.T, m logMark) []string {
	t.Helper()
	b, err := os.ReadFile(m.path)
	if err != nil {
		t.Fatal(err)
	}
	if int64(len(b)) < m.off {
		return nil
	}
	var lines []string
	sc := bufio.NewScanner(bytes.NewReader(b[m.off:]))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		lines = append(lines, sc.Text())
	}
	return lines
}

// logStats counts lines by level (text handler: level=WARN).
type logStats struct{ all, debug, info, warn, errs int }

func countLog(lines []string) logStats {
	var s logStats
	for _, l := range lines {
		s.all++
		switch {
		case strings.Contains(l, "level=DEBUG"):
			s.debug++
		case strings.Contains(l, "level=INFO"):
			s.info++
		case strings.Contains(l, "level=WARN"):
			s.warn++
		case strings.Contains(l, "level=ERROR"):
			s.errs++
		}
	}
	return s
}

// grep returns the lines holding every one of the substrings.
func grep(lines []string, subs ...string) []string {
	var out []string
next:
	for _, l := range lines {
		for _, s := range subs {
			if !strings.Contains(l, s) {
				continue next
			}
		}
		out = append(out, l)
	}
	return out
}

// awaitLog waits until p's log after m holds a line with every substring.
func awaitLog(t *testing.T, p *lab.Proc, m logMark, timeout time.Duration, subs ...string) string {
	t.Helper()
	var found string
	await.Eventually(t, timeout, fmt.Sprintf("log line with %q", subs), func() error {
		lines := logSince(t, m)
		if g := grep(lines, subs...); len(g) > 0 {
			found = g[0]
			return nil
		}
		if len(lines) > 20 {
			lines = lines[len(lines)-20:]
		}
		return fmt.Errorf("not logged yet; the log ends with:\n%s", strings.Join(lines, "\n"))
	})
	return found
}

// etcdKV reads key.
func etcdKV(t *testing.T, cli *clientv3.Client, key string) (*clientv3.GetResponse, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return cli.Get(ctx, key)
}

func leaseKey(sn netip.Prefix) string {
	return prefix + "/subnets/" + lease.LeaseKey(sn, netip.Prefix{})
}

// fakePeer is a lease of a host that does not exist, written by the test.
type fakePeer struct {
	Subnet   netip.Prefix
	PublicIP netip.Addr
	MAC      string
}

func (f fakePeer) value() string {
	return fmt.Sprintf(`{"PublicIP":%q,"PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":%q}}`,
		f.PublicIP, f.MAC)
}

// putLease writes key=val, with an etcd lease of ttl if ttl > 0, through
// cli; it returns the etcd lease ID (0 for none).
func putLease(t *testing.T, cli *clientv3.Client, key, val string, ttl time.Duration) clientv3.LeaseID {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var opts []clientv3.OpOption
	var id clientv3.LeaseID
	if ttl > 0 {
		err := retryEtcd(ctx, func() error {
			g, err := cli.Grant(ctx, int64(ttl/time.Second))
			if err == nil {
				id = g.ID
			}
			return err
		})
		if err != nil {
			t.Fatalf("grant: %v", err)
		}
		opts = append(opts, clientv3.WithLease(id))
	}
	if err := retryEtcd(ctx, func() error { _, err := cli.Put(ctx, key, val, opts...); return err }); err != nil {
		t.Fatalf("put %s: %v", key, err)
	}
	return id
}

func deleteKey(t *testing.T, cli *clientv3.Client, key string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := retryEtcd(ctx, func() error { _, err := cli.Delete(ctx, key); return err }); err != nil {
		t.Fatalf("delete %s: %v", key, err)
	}
}

// retryEtcd retries an idempotent request until ctx ends: a request in
// flight to a member that was just killed fails once (Unavailable) before
// the client moves to another member.
func retryEtcd(ctx context.Context, f func() error) error {
	for {
		err := f()
		if err == nil || ctx.Err() != nil {
			return err
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// kernelPeers is what the vxlan data plane of one host holds: the routes
// through flannel.1, its permanent neighbours and its fdb entries with a
// destination, each as a sorted list of strings. Duplicates show up as
// repeated strings.
type kernelPeers struct {
	routes, neighs, fdbs []string
}

func readKernelPeers(t *testing.T, nh *netlink.Handle) (kernelPeers, error) {
	t.Helper()
	var k kernelPeers
	link, err := nh.LinkByName("flannel.1")
	if err != nil {
		return k, err
	}
	routes, err := nh.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{LinkIndex: link.Attrs().Index, Table: syscall.RT_TABLE_MAIN},
		netlink.RT_FILTER_OIF|netlink.RT_FILTER_TABLE)
	if err != nil {
		return k, err
	}
	for _, r := range routes {
		if r.Dst == nil || r.Scope == netlink.SCOPE_LINK && r.Gw == nil {
			continue // the device's own connected route, if any
		}
		k.routes = append(k.routes, fmt.Sprintf("%s via %s", r.Dst, r.Gw))
	}
	neighs, err := nh.NeighList(link.Attrs().Index, netlink.FAMILY_V4)
	if err != nil {
		return k, err
	}
	for _, n := range neighs {
		if n.State&netlink.NUD_PERMANENT != 0 {
			k.neighs = append(k.neighs, fmt.Sprintf("%s %s", n.IP, n.HardwareAddr))
		}
	}
	fdbs, err := nh.NeighList(link.Attrs().Index, syscall.AF_BRIDGE)
	if err != nil {
		return k, err
	}
	for _, n := range fdbs {
		if n.IP != nil {
			k.fdbs = append(k.fdbs, fmt.Sprintf("%s %s", n.HardwareAddr, n.IP))
		}
	}
	sort.Strings(k.routes)
	sort.Strings(k.neighs)
	sort.Strings(k.fdbs)
	return k, nil
}

// wantKernelPeers is the exact vxlan state for the given peers: subnet ->
// (public IP, VTEP MAC).
func wantKernelPeers(peers map[netip.Prefix]fakePeer) kernelPeers {
	var k kernelPeers
	for sn, p := range peers {
		k.routes = append(k.routes, fmt.Sprintf("%s via %s", sn, sn.Addr()))
		k.neighs = append(k.neighs, fmt.Sprintf("%s %s", sn.Addr(), p.MAC))
		k.fdbs = append(k.fdbs, fmt.Sprintf("%s %s", p.MAC, p.PublicIP))
	}
	sort.Strings(k.routes)
	sort.Strings(k.neighs)
	sort.Strings(k.fdbs)
	return k
}

func (k kernelPeers) String() string {
	return fmt.Sprintf("routes %q, neighbours %q, fdb %q", k.routes, k.neighs, k.fdbs)
}

func (k kernelPeers) equal(o kernelPeers) bool { return k.String() == o.String() }

// hostLeases reads every lease in etcd as subnet -> peer (public IP and
// VTEP MAC), skipping values that do not parse.
func hostLeases(t *testing.T, cli *clientv3.Client) map[netip.Prefix]fakePeer {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := cli.Get(ctx, prefix+"/subnets/", clientv3.WithPrefix())
	if err != nil {
		t.Fatalf("list leases: %v", err)
	}
	out := map[netip.Prefix]fakePeer{}
	for _, kv := range resp.Kvs {
		v4, _, err := lease.ParseLeaseKey(strings.TrimPrefix(string(kv.Key), prefix+"/subnets/"))
		if err != nil {
			continue
		}
		a, err := lease.ParseLeaseAttrs(kv.Value)
		if err != nil {
			continue
		}
		var bd struct{ VtepMAC string }
		_ = json.Unmarshal(a.BackendData, &bd)
		out[v4] = fakePeer{Subnet: v4, PublicIP: a.PublicIP, MAC: bd.VtepMAC}
	}
	return out
}

// peersOf is leases without own.
func peersOf(leases map[netip.Prefix]fakePeer, own netip.Prefix) map[netip.Prefix]fakePeer {
	out := map[netip.Prefix]fakePeer{}
	for sn, p := range leases {
		if sn != own {
			out[sn] = p
		}
	}
	return out
}

// awaitKernelPeers waits until nh holds exactly the entries of want, and
// returns how long that took.
func awaitKernelPeers(t *testing.T, nh *netlink.Handle, want kernelPeers, timeout time.Duration, what string) time.Duration {
	t.Helper()
	start := time.Now()
	await.Eventually(t, timeout, what, func() error {
		got, err := readKernelPeers(t, nh)
		if err != nil {
			return err
		}
		if !got.equal(want) {
			return fmt.Errorf("kernel holds\n  %v\nwant\n  %v", got, want)
		}
		return nil
	})
	return time.Since(start)
}

// agentLeaseID returns the etcd lease ID attached to key, 0 when it has
// none or does not exist.
func agentLeaseID(t *testing.T, cli *clientv3.Client, key string) (clientv3.LeaseID, int64) {
	t.Helper()
	resp, err := etcdKV(t, cli, key)
	if err != nil {
		t.Fatalf("get %s: %v", key, err)
	}
	if len(resp.Kvs) == 0 {
		return 0, 0
	}
	return clientv3.LeaseID(resp.Kvs[0].Lease), resp.Kvs[0].CreateRevision
}

// freshEtcdClient returns a new client of the lab's etcd, closed when the
// test ends: the test's first client, like any gRPC client, may wait a
// long reconnect backoff after a long outage.
func freshEtcdClient(t *testing.T, c *cluster) *clientv3.Client {
	t.Helper()
	cli, err := c.lab.EtcdClient()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	return cli
}

var pingOpts2 = lab.PingOptions{Count: 2}
