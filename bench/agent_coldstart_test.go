package bench

import (
	"bufio"
	"errors"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/netagent/netagent/backend"
	"github.com/netagent/netagent/internal/lab"
)

// agentDevice is the vxlan device of VNI 1.
const agentDevice = "flannel.1"

// agentPollInterval is how often a cold start checks its deadline, and
// dumps the kernel if its notifications overflowed.
const agentPollInterval = 10 * time.Millisecond

// agentColdStartTimeout bounds a cold start.
const agentColdStartTimeout = 2 * time.Minute

// agentMilestones are the agent's log messages a cold start is broken
// down by, in the order the agent logs them.
var agentMilestones = []string{
	"starting netagent",
	"network config",
	"external interface",
	"lease acquired",
	"vxlan device ready",
	"files written",
	"data plane programmed",
}

// agentColdStart is what a cold start measured.
type agentColdStart struct {
	proc *lab.Proc
	// Total is from just before the agent's process was started to the
	// kernel notifying the last of the entries (or, if the notifications
	// overflowed, to the end of the first dump that found them all).
	Total time.Duration
	// Milestones are the times, from the same start, at which the agent
	// logged each of agentMilestones (absent: not logged). The log has
	// millisecond resolution.
	Milestones map[string]time.Duration
	// FirstEntry is when the kernel notified the first entry (zero if the
	// notifications overflowed).
	FirstEntry time.Duration
	// CPU is the agent's user+system time once the entries were found,
	// CPUAtFirst when the first one was (both to the kernel's 10 ms tick).
	CPU, CPUAtFirst time.Duration
	// Polled is true when the notifications overflowed and the kernel was
	// dumped every agentPollInterval instead (each dump competes with the
	// agent for the CPUs and the kernel's locks: a worse measurement).
	Polled bool
}

// agentKernel counts the vxlan entries of flannel.1 the way dpCount does:
// routes with the backend's protocol, permanent neighbours and unicast
// fdb entries with a destination. It counts in stages and stops at the
// first kind short of want, to keep polls cheap while the agent works;
// complete is true when all three kinds reached want (and then every count
// is exact). A missing device counts as nothing yet.
func agentKernel(h *netlink.Handle, want int) (routes, neighs, fdbs int, complete bool, err error) {
	l, err := h.LinkByName(agentDevice)
	var notFound netlink.LinkNotFoundError
	if errors.As(err, &notFound) {
		return 0, 0, 0, false, nil
	}
	if err != nil {
		return 0, 0, 0, false, err
	}
	fs, err := h.NeighList(l.Attrs().Index, syscall.AF_BRIDGE)
	if err != nil {
		return 0, 0, 0, false, err
	}
	for _, f := range fs {
		if f.IP != nil && f.HardwareAddr[0]&1 == 0 {
			fdbs++
		}
	}
	if fdbs < want {
		return 0, 0, fdbs, false, nil
	}
	ns, err := h.NeighList(l.Attrs().Index, netlink.FAMILY_V4)
	if err != nil {
		return 0, 0, fdbs, false, err
	}
	for _, n := range ns {
		if n.State == netlink.NUD_PERMANENT {
			neighs++
		}
	}
	if neighs < want {
		return 0, neighs, fdbs, false, nil
	}
	rs, err := h.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Protocol: backend.RouteProtocol}, netlink.RT_FILTER_PROTOCOL)
	if err != nil {
		return 0, neighs, fdbs, false, err
	}
	return len(rs), neighs, fdbs, len(rs) >= want, nil
}

// coldStart starts the agent on h, whose etcd already holds peers vxlan
// leases, and waits until the kernel of h holds a route, a neighbour and
// an fdb entry for each of them, watching the kernel's notifications.
// It fails the benchmark if the agent exits, the kernel ends up with other
// than peers entries of each kind, or the timeout passes.
func (al *agentLab) coldStart(h *lab.Host, peers int) agentColdStart {
	al.b.Helper()
	nh, nsh := al.handle(h.NS)
	stop := make(chan struct{})
	defer close(stop)
	ks, err := agentWatchKernel(nsh, stop)
	if err != nil {
		al.b.Fatal(err)
	}
	var res agentColdStart
	t0 := time.Now()
	res.proc = al.startAgent(h)
	tick := time.NewTicker(agentPollInterval)
	defer tick.Stop()
	for res.Total == 0 {
		select {
		case <-res.proc.Done():
			al.b.Fatalf("agent on %s exited during the cold start:\n%s", h.Name, res.proc.Tail(2000))
		case <-ks.wake:
		case <-tick.C:
		}
		if time.Since(t0) > agentColdStartTimeout {
			r, n, f, _ := ks.counts()
			al.b.Fatalf("cold start on %s: after %v, %d routes, %d neighbours, %d fdb entries of %d notified (errors: %v)\n%s",
				h.Name, agentColdStartTimeout, r, n, f, peers, ks.errors(), res.proc.Tail(2000))
		}
		if len(ks.errors()) > 0 {
			res.Polled = true
			if _, _, _, complete, err := agentKernel(nh, peers); err != nil {
				al.b.Fatalf("reading the kernel of %s: %v", h.Name, err)
			} else if complete {
				res.Total = time.Since(t0)
			}
			continue
		}
		r, n, f, last := ks.counts()
		if res.CPUAtFirst == 0 && r+n+f > 0 {
			if res.CPUAtFirst, err = agentProcCPU(res.proc.PID()); err != nil {
				al.b.Fatal(err)
			}
		}
		if r >= peers && n >= peers && f >= peers {
			res.Total = last.Sub(t0)
			res.FirstEntry = ks.first().Sub(t0)
		}
	}
	if res.CPU, err = agentProcCPU(res.proc.PID()); err != nil {
		al.b.Fatal(err)
	}
	if r, n, f, _, err := agentKernel(nh, peers); err != nil || r != peers || n != peers || f != peers {
		al.b.Fatalf("%s holds %d routes, %d neighbours, %d fdb entries (%v); want %d each", h.Name, r, n, f, err, peers)
	}
	// "data plane programmed" is logged up to 20 ms after the first pass:
	// give it that long before reading the log.
	deadline := time.Now().Add(time.Second)
	for {
		ms, err := agentLogMilestones(res.proc.LogPath, t0)
		if err != nil {
			al.b.Fatal(err)
		}
		res.Milestones = ms
		if _, ok := ms["data plane programmed"]; ok || time.Now().After(deadline) {
			break
		}
		<-tick.C
	}
	return res
}

// agentLogMilestones reads the agent's text log at path and returns, for
// each of agentMilestones, the time of its first line relative to t0.
func agentLogMilestones(path string, t0 time.Time) (map[string]time.Duration, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	out := map[string]time.Duration{}
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		at, msg, ok := agentParseLogLine(sc.Text())
		if !ok {
			continue
		}
		for _, m := range agentMilestones {
			if _, seen := out[m]; !seen && msg == m {
				out[m] = at.Sub(t0)
			}
		}
	}
	return out, sc.Err()
}

// agentParseLogLine parses the time and msg of a log/slog text line
// (`time=2006-01-02T15:04:05.000Z07:00 level=INFO msg="..." ...`).
func agentParseLogLine(line string) (time.Time, string, bool) {
	rest, ok := strings.CutPrefix(line, "time=")
	if !ok {
		return time.Time{}, "", false
	}
	ts, rest, _ := strings.Cut(rest, " ")
	at, err := time.Parse(time.RFC3339Nano, ts)
	if err != nil {
		return time.Time{}, "", false
	}
	i := strings.Index(rest, "msg=")
	if i < 0 {
		return time.Time{}, "", false
	}
	rest = rest[i+len("msg="):]
	if strings.HasPrefix(rest, `"`) {
		q, err := strconv.QuotedPrefix(rest)
		if err != nil {
			return time.Time{}, "", false
		}
		msg, err := strconv.Unquote(q)
		return at, msg, err == nil
	}
	msg, _, _ := strings.Cut(rest, " ")
	return at, msg, true
}
