package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/netagent/netagent/agent"
	"github.com/netagent/netagent/subnetfile"
)

// errNotRunning and errNotAnswering are returned by `netagent status`
// after it printed what it could read without the agent: nothing listens
// on the status socket (no socket, connection refused), or something
// does but did not answer (a stopped or wedged agent).
var (
	errNotRunning   = errors.New("netagent is not running")
	errNotAnswering = errors.New("netagent is not answering on its status socket (it is running but stopped or wedged)")
)

// askFailure says whether err, the failure of asking the status socket,
// means that nothing listens there (not running) or that a listener did
// not answer (not answering): a socket that accepts but never answers is
// an agent that is stopped (SIGSTOP), wedged or overloaded, not gone.
func askFailure(err error) error {
	if errors.Is(err, syscall.ENOENT) || errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ENOTSOCK) {
		return errNotRunning
	}
	return errNotAnswering
}

// statusClient asks the agent's status socket.
func statusClient(socket string) *http.Client {
	return &http.Client{
		Timeout: 5 * time.Second,
		Transport: &http.Transport{
			DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
				var d net.Dialer
				return d.DialContext(ctx, "unix", socket)
			},
		},
	}
}

// fetchReport gets the agent's Report over its status socket.
func fetchReport(ctx context.Context, socket string) (*agent.Report, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://netagent/v1/status", nil)
	if err != nil {
		return nil, err
	}
	resp, err := statusClient(socket).Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("status socket %s answered %s", socket, resp.Status)
	}
	var r agent.Report
	if err := json.NewDecoder(io.LimitReader(resp.Body, 16<<20)).Decode(&r); err != nil {
		return nil, fmt.Errorf("status socket %s: %w", socket, err)
	}
	return &r, nil
}

func runStatus(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("status", flag.ContinueOnError)
	fs.SetOutput(stderr)
	socket := fs.String("status-socket", agent.DefaultStatusSocket, "the agent's status socket (default for another --etcd-prefix: the one that agent uses by default)")
	asJSON := fs.Bool("json", false, "print JSON (stable field names) instead of a table")
	subnetFile := fs.String("subnet-file", subnetfile.DefaultPath, "subnet file to read when the agent is not running")
	check := fs.Bool("check", false, "exit 1, with a one-line summary on stderr, when a peer is unreachable or its kernel entries are not as wanted")
	etcd := addEtcdCommand(fs)
	o := agent.DefaultOptions()
	fs.BoolVar(&o.Kube.Enabled, "kube-subnet-mgr", false, "the agent runs in kube mode: etcd is not read when it is not running")
	fs.StringVar(&o.Kube.AnnotationPrefix, "kube-annotation-prefix", o.Kube.AnnotationPrefix, "the agent's --kube-annotation-prefix in kube mode (for its default status socket)")
	if err := fs.Parse(args); err != nil {
		return usageError{err}
	}
	if fs.NArg() > 0 {
		return usageError{fmt.Errorf("unexpected argument %q", fs.Arg(0))}
	}
	if err := etcd.finish(fs, getenv); err != nil {
		return usageError{err}
	}
	o.Etcd = etcd.opts
	if !explicitFlags(fs, getenv)["status-socket"] {
		*socket = agent.StatusSocketFor(o.InstanceKey())
	}
	r, err := fetchReport(ctx, *socket)
	if err == nil {
		if *asJSON {
			if err := writeJSON(stdout, r); err != nil {
				return err
			}
		} else {
			printReport(stdout, r)
		}
		if *check {
			return checkPeers(r)
		}
		return nil
	}
	state := askFailure(err)
	off := offlineStatus(ctx, *socket, err, *subnetFile, o)
	off.State = "not running"
	if errors.Is(state, errNotAnswering) {
		off.State = "not answering"
	}
	if *asJSON {
		if err := writeJSON(stdout, off); err != nil {
			return err
		}
	} else {
		printOffline(stdout, off)
	}
	return state
}

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func ago(t time.Time) string {
	return fmt.Sprintf("%s (%s ago)", t.Format(time.RFC3339), time.Since(t).Round(time.Second))
}

// printReport prints r as an admin reads it.
func printReport(w io.Writer, r *agent.Report) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	p := func(k, v string) { fmt.Fprintf(tw, "%s:\t%s\n", k, v) }
	p("version", r.Version)
	p("uptime", (time.Duration(r.UptimeSeconds) * time.Second).String())
	state := "ready"
	if !r.Ready {
		state = "NOT ready"
	}
	var failed []string
	for _, c := range r.Health {
		if !c.OK {
			failed = append(failed, c.Name+": "+c.Why)
		}
	}
	if len(failed) == 0 {
		state += ", healthy"
	} else {
		state += ", UNHEALTHY (" + strings.Join(failed, "; ") + ")"
	}
	p("state", state)
	printStore(p, r)
	renewal := "never"
	if r.Etcd.LastRenewal != nil {
		renewal = ago(*r.Etcd.LastRenewal)
	}
	p("last renewal", renewal)
	if l := r.Lease; l != nil {
		ttl := "no expiry (reservation)"
		switch {
		case r.Store.Kind == agent.StoreKubernetes:
			ttl = "the Node's pod CIDR"
		case !l.Reservation:
			ttl = "TTL " + (time.Duration(l.TTLSeconds) * time.Second).String() + " left"
		}
		p("lease", fmt.Sprintf("%s  %s", strings.TrimSpace(l.Subnet+" "+l.IPv6Subnet), ttl))
	} else {
		p("lease", "none yet")
	}
	if n := r.Network; n != nil {
		net := ""
		switch {
		case n.Network != "" && r.Store.Kind == agent.StoreKubernetes:
			// The controller manager allocates the pod CIDRs, from the
			// network's first subnet: SubnetMin/SubnetMax do not apply.
			net = fmt.Sprintf("%s subnets /%d (the Nodes' pod CIDRs)", n.Network, n.SubnetLen)
		case n.Network != "":
			net = fmt.Sprintf("%s subnets /%d (%s to %s)", n.Network, n.SubnetLen, n.SubnetMin, n.SubnetMax)
		}
		if n.IPv6Network != "" {
			net += fmt.Sprintf("  %s subnets /%d", n.IPv6Network, n.IPv6SubnetLen)
		}
		p("network", strings.TrimSpace(net)+"  backend "+n.BackendType)
	}
	if i := r.Interface; i != nil {
		p("interface", fmt.Sprintf("%s  addr %s  public IP %s  mtu %d", i.Name, orDash(i.Addr), orDash(i.PublicIP), i.MTU))
	}
	if b := r.Backend; b != nil {
		p("backend", fmt.Sprintf("%s  device %s  mtu %d  vtep %s", b.Type, orDash(b.Device), b.MTU, orDash(b.VtepMAC)))
		if b.DeviceV6 != "" {
			p("backend ipv6", fmt.Sprintf("device %s  vtep %s", b.DeviceV6, orDash(b.VtepMACV6)))
		}
		for _, d := range b.WireGuard {
			p("wireguard", fmt.Sprintf("%s  %s (%s)  public key %s  port %d", d.Device, d.Impl, d.ImplReason, d.PublicKey, d.ListenPort))
		}
		last := "never"
		if b.LastPass != nil {
			last = ago(*b.LastPass)
		}
		p("reconcile", fmt.Sprintf("%d passes, last %s  repairs %s  netlink errors %d", b.Passes, last, repairs(b.Repairs), b.NetlinkErrors))
	}
	masq := "off"
	if r.Masquerade.Enabled {
		masq = "rules in place"
		if !r.Masquerade.InPlace {
			masq = "rules NOT in place: " + r.Masquerade.Reason
		}
	}
	p("masquerade", masq)
	p("probe", probeLine(&r.Probe))
	for i := range r.Probe.Offloads {
		p("tx csum offload", offloadLine(&r.Probe.Offloads[i]))
	}
	tw.Flush()
	fmt.Fprintf(w, "\npeers (%d):\n", len(r.Peers))
	tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "SUBNET\tPUBLIC IP\tVTEP MAC\tREACH\tRTT\tCAUSE\tMODE\tKERNEL")
	for _, pr := range r.Peers {
		k := "ok"
		if !pr.Programmed {
			k = "MISMATCH " + pr.Error
		}
		reach, rtt, cause := peerProbeCells(pr.Probe)
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", pr.Subnet, pr.PublicIP, orDash(pr.VtepMAC), reach, rtt, cause, pr.Mode, k)
	}
	tw.Flush()
	printWireGuardPeers(w, r.Peers)
	for _, x := range r.Refused {
		fmt.Fprintf(w, "refused lease %s (%s): %s\n", x.Key, x.Reason, x.Detail)
	}
	printErrors(w, r.RecentErrors)
}

// printStore prints the cluster store's lines: etcd's, or in kube mode the
// API server's, the Node's and the informer's.
func printStore(p func(k, v string), r *agent.Report) {
	reach := "answering"
	if !r.Etcd.Reachable {
		reach = "NOT answering"
		if r.Etcd.Error != "" {
			reach += ": " + r.Etcd.Error
		}
	}
	if r.Etcd.LastContact != nil {
		reach += "  last answer " + ago(*r.Etcd.LastContact)
	}
	k := r.Store.KubeStoreReport
	if r.Store.Kind != agent.StoreKubernetes || k == nil {
		p("etcd", fmt.Sprintf("%s  prefix %s", strings.Join(r.Etcd.Endpoints, ","), r.Etcd.Prefix))
		p("etcd state", reach)
		return
	}
	p("store", fmt.Sprintf("kubernetes %s  node %s  annotations %s  config %s", k.APIServer, k.Node, k.AnnotationPrefix, k.NetConfigPath))
	p("api server", reach)
	informer := "Nodes NOT listed yet"
	if k.Synced {
		informer = "synced"
	}
	if k.LastEvent != nil {
		informer += "  last Node event " + ago(*k.LastEvent)
	}
	p("node informer", informer)
	c := k.Counters
	p("store counters", fmt.Sprintf("%d Node events  %d patches (%d failed)  %d watch errors  %d Node losses  %d restores",
		c.Events, c.Patches, c.PatchFailures, c.WatchErrors, c.Losses, c.Restores))
}

// printWireGuardPeers lists, for a wireguard backend, each peer's key,
// endpoint, latest handshake and bytes.
func printWireGuardPeers(w io.Writer, peers []agent.PeerReport) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	header := false
	for _, pr := range peers {
		wg := pr.WireGuard
		if wg == nil {
			continue
		}
		if !header {
			fmt.Fprintln(w, "\nwireguard peers:")
			fmt.Fprintln(tw, "SUBNET\tPUBLIC KEY\tENDPOINT\tLATEST HANDSHAKE\tRX\tTX")
			header = true
		}
		hs := "never"
		if wg.LatestHandshake != nil {
			hs = ago(*wg.LatestHandshake)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%d\n", pr.Subnet, wg.PublicKey, orDash(wg.Endpoint), hs, wg.RxBytes, wg.TxBytes)
	}
	tw.Flush()
}

func repairs(m map[string]uint64) string {
	var parts []string
	for _, k := range []string{"route", "neigh", "fdb", "device", "address", "peer"} {
		if m[k] > 0 {
			parts = append(parts, fmt.Sprintf("%s=%d", k, m[k]))
		}
	}
	if len(parts) == 0 {
		return "none"
	}
	return strings.Join(parts, ",")
}

func printErrors(w io.Writer, errs []agent.RecentError) {
	if len(errs) == 0 {
		fmt.Fprintln(w, "\nrecent errors: none")
		return
	}
	fmt.Fprintln(w, "\nrecent errors:")
	for _, e := range errs {
		fmt.Fprintf(w, "  %s  %s\n", e.Time.Format(time.RFC3339), e.Message)
	}
}

// probeLine is the prober's state in one line.
func probeLine(pr *agent.ProbeReport) string {
	if !pr.Enabled {
		return "off: " + orDash(pr.State)
	}
	return fmt.Sprintf("every %s, at most %g/s, port %d  sent %d answered %d  unreachable %d",
		time.Duration(pr.IntervalSeconds*float64(time.Second)).Round(time.Millisecond), pr.Rate, pr.Port, pr.Sent, pr.Answered, pr.Unreachable)
}

// offloadLine is a vxlan device's TX checksum offload in one line.
func offloadLine(o *agent.OffloadReport) string {
	s := fmt.Sprintf("%s tx %s  (%s", o.Device, map[bool]string{true: "on", false: "off"}[o.TxChecksum], o.Mode)
	if o.Auto {
		s += ", automatic trial"
	}
	s += ")"
	switch {
	case o.Trial:
		s += "  OFF ON TRIAL for " + strings.Join(o.Peers, ",")
	case o.KeptOff:
		s += "  kept off since " + o.Since.Format(time.RFC3339) + ": " + strings.Join(o.Peers, ",") + " recovered with it off"
	}
	if c := o.LastChange; c != nil {
		s += fmt.Sprintf("  last change %s %s", c.Kind, c.Time.Format(time.RFC3339))
	}
	if o.Error != "" {
		s += "  error: " + o.Error
	}
	return s
}

// peerProbeCells are a peer's REACH, RTT and CAUSE cells.
func peerProbeCells(p *agent.PeerProbeReport) (reach, rtt, cause string) {
	switch {
	case p == nil:
		return "-", "-", "-"
	case !p.Probed:
		return "?", "-", "-"
	}
	reach, cause = "yes", "-"
	if !p.Reachable {
		reach, cause = "NO", p.Cause
		if p.OffloadRuledOut {
			cause += " (offload ruled out)"
		}
	}
	rtt = "-"
	if p.RTTMs > 0 {
		rtt = fmt.Sprintf("%.2fms", p.RTTMs)
	}
	return reach, rtt, cause
}

// checkPeers is `status --check`: an error naming the peers that are
// unreachable or not programmed, and the other hosts' lease keys the data
// plane refuses (each a host this one cannot reach: a conflicting,
// malformed or foreign lease, docs/compatibility.md §3.8); nil when there
// are none.
func checkPeers(r *agent.Report) error {
	var bad []string
	for _, p := range r.Peers {
		switch {
		case p.Probe != nil && p.Probe.Probed && !p.Probe.Reachable:
			bad = append(bad, fmt.Sprintf("%s unreachable (%s)", p.Subnet, p.Probe.Cause))
		case !p.Programmed:
			bad = append(bad, p.Subnet+" kernel entries not as wanted")
		}
	}
	var refused []string
	for _, k := range r.Refused {
		refused = append(refused, fmt.Sprintf("%s (%s)", k.Key, k.Reason))
	}
	var parts []string
	if len(bad) > 0 {
		parts = append(parts, fmt.Sprintf("%d of %d peers: %s", len(bad), len(r.Peers), strings.Join(bad, "; ")))
	}
	if len(refused) > 0 {
		parts = append(parts, fmt.Sprintf("%d lease keys refused: %s", len(refused), strings.Join(refused, "; ")))
	}
	if len(parts) == 0 {
		return nil
	}
	return fmt.Errorf("check failed: %s", strings.Join(parts, "; "))
}
