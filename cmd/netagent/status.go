package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/netagent/netagent/agent"
)

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
	socket := fs.String("status-socket", agent.DefaultStatusSocket, "the agent's status socket")
	asJSON := fs.Bool("json", false, "print JSON (stable field names) instead of a table")
	if err := fs.Parse(args); err != nil {
		return usageError{err}
	}
	if fs.NArg() > 0 {
		return usageError{fmt.Errorf("unexpected argument %q", fs.Arg(0))}
	}
	if v := getenv("NETAGENT_STATUS_SOCKET"); v != "" && !flagSet(fs, "status-socket") {
		*socket = v
	}
	r, err := fetchReport(ctx, *socket)
	if err != nil {
		return fmt.Errorf("netagent is not running or not answering (%v)", err)
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(r)
	}
	printReport(stdout, r)
	return nil
}

func flagSet(fs *flag.FlagSet, name string) bool {
	set := false
	fs.Visit(func(f *flag.Flag) { set = set || f.Name == name })
	return set
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// printReport prints r as an admin reads it.
func printReport(w io.Writer, r *agent.Report) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	p := func(k, v string) { fmt.Fprintf(tw, "%s:\t%s\n", k, v) }
	p("version", r.Version)
	p("uptime", (time.Duration(r.UptimeSeconds) * time.Second).String())
	renewal := "never"
	if r.Etcd.LastRenewal != nil {
		renewal = fmt.Sprintf("%s (%s ago)", r.Etcd.LastRenewal.Format(time.RFC3339), time.Since(*r.Etcd.LastRenewal).Round(time.Second))
	}
	p("etcd", fmt.Sprintf("%s  prefix %s  last renewal %s", strings.Join(r.Etcd.Endpoints, ","), r.Etcd.Prefix, renewal))
	if l := r.Lease; l != nil {
		ttl := "no expiry (reservation)"
		if !l.Reservation {
			ttl = (time.Duration(l.TTLSeconds) * time.Second).String() + " left"
		}
		p("lease", fmt.Sprintf("%s  %s", strings.TrimSpace(l.Subnet+" "+l.IPv6Subnet), ttl))
	} else {
		p("lease", "none yet")
	}
	if n := r.Network; n != nil {
		p("network", strings.TrimSpace(fmt.Sprintf("%s /%d %s", n.Network, n.SubnetLen, n.IPv6Network))+"  backend "+n.BackendType)
	}
	if i := r.Interface; i != nil {
		p("interface", fmt.Sprintf("%s  addr %s  public %s  mtu %d", i.Name, orDash(i.Addr), orDash(i.PublicIP), i.MTU))
	}
	if b := r.Backend; b != nil {
		p("backend", fmt.Sprintf("%s  device %s  mtu %d  vtep %s  passes %d  netlink errors %d", b.Type, orDash(b.Device), b.MTU, orDash(b.VtepMAC), b.Passes, b.NetlinkErrors))
	}
	masq := "off"
	if r.Masquerade.Enabled {
		masq = "in place"
		if !r.Masquerade.InPlace {
			masq = "NOT in place: " + r.Masquerade.Reason
		}
	}
	p("masquerade", masq)
	tw.Flush()
	fmt.Fprintf(w, "\npeers (%d):\n", len(r.Peers))
	tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "SUBNET\tPUBLIC IP\tVTEP MAC\tMODE\tKERNEL")
	for _, pr := range r.Peers {
		k := "ok"
		if !pr.Programmed {
			k = "MISMATCH " + pr.Error
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", pr.Subnet, pr.PublicIP, orDash(pr.VtepMAC), pr.Mode, k)
	}
	tw.Flush()
	if len(r.RecentErrors) > 0 {
		fmt.Fprintln(w, "\nrecent errors:")
		for _, e := range r.RecentErrors {
			fmt.Fprintf(w, "  %s  %s\n", e.Time.Format(time.RFC3339), e.Message)
		}
	}
}
