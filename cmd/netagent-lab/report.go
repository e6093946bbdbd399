package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/netagent/netagent/internal/await"
)

// execFunc runs argv inside a lab namespace and returns its combined
// output: lab.Lab.Exec in the `up` process, labState.exec elsewhere.
type execFunc func(ctx context.Context, ns string, argv ...string) ([]byte, error)

// pingWorkers bounds the pings in flight at once.
const pingWorkers = 8

// pingArgv is one bounded ping over family f: two echo requests 0.2 s
// apart, the last reply awaited at most 1 s, so that a cell takes at most
// about 1.2 s.
func pingArgv(f family, dst string) []string {
	fam := "-4"
	if f == ipv6 {
		fam = "-6"
	}
	return []string{"ping", fam, "-n", "-q", "-c", "2", "-i", "0.2", "-W", "1", dst}
}

// matrix is the result of pinging every container from every other over
// one family.
type matrix struct {
	family family
	names  []string
	// ok[i][j] reports whether names[i] reached names[j]; the diagonal is
	// not pinged.
	ok [][]bool
}

// pingMatrices returns the ping matrix of each family, in order.
func pingMatrices(ctx context.Context, run execFunc, ctns []containerState, fams []family) []matrix {
	var ms []matrix
	for _, f := range fams {
		ms = append(ms, pingMatrix(ctx, run, ctns, f))
	}
	return ms
}

// printMatrices prints each matrix of ms, a blank line between two.
func printMatrices(w io.Writer, ms []matrix) {
	for i, m := range ms {
		if i > 0 {
			fmt.Fprintln(w)
		}
		m.print(w)
	}
}

// pingFailures returns an error counting the pings that failed in ms, per
// family, or nil when every one passed.
func pingFailures(ms []matrix) error {
	var failed, all int
	var per []string
	for _, m := range ms {
		ok, total := m.counts()
		failed, all = failed+total-ok, all+total
		if ok != total {
			per = append(per, fmt.Sprintf("%s %d of %d", m.family, total-ok, total))
		}
	}
	if failed == 0 {
		return nil
	}
	return fmt.Errorf("%d of %d pings failed (%s)", failed, all, strings.Join(per, ", "))
}

// pingMatrix pings every container from every other one over family f (a
// container without an address of f counts as unreachable), from inside
// the source container's namespace, with pingWorkers pings in flight.
func pingMatrix(ctx context.Context, run execFunc, ctns []containerState, f family) matrix {
	n := len(ctns)
	m := matrix{family: f, ok: make([][]bool, n)}
	for i, c := range ctns {
		m.names = append(m.names, c.Name)
		m.ok[i] = make([]bool, n)
	}
	type cell struct{ i, j int }
	cells := make(chan cell)
	var mu sync.Mutex
	var wg sync.WaitGroup
	for range min(pingWorkers, n*n) {
		wg.Go(func() {
			for c := range cells {
				dst := ctns[c.j].addr(f)
				var err error
				if dst == "" {
					err = fmt.Errorf("%s has no %s address", ctns[c.j].Name, f)
				} else {
					_, err = run(ctx, ctns[c.i].NS, pingArgv(f, dst)...)
				}
				mu.Lock()
				m.ok[c.i][c.j] = err == nil
				mu.Unlock()
			}
		})
	}
	for i := range n {
		for j := range n {
			if i != j {
				cells <- cell{i, j}
			}
		}
	}
	close(cells)
	wg.Wait()
	return m
}

// counts returns the number of cells that passed and the number pinged.
func (m matrix) counts() (ok, total int) {
	for i := range m.ok {
		for j := range m.ok[i] {
			if i == j {
				continue
			}
			total++
			if m.ok[i][j] {
				ok++
			}
		}
	}
	return ok, total
}

// print writes the matrix as a table, rows from, columns to: "ok" for a
// reply, "--" for none, "." on the diagonal; then a summary line.
func (m matrix) print(w io.Writer) {
	fmt.Fprintf(w, "%s ping matrix (row: from, column: to):\n", m.family)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "\t%s\n", strings.Join(m.names, "\t"))
	for i, from := range m.names {
		cells := make([]string, len(m.names))
		for j := range m.names {
			switch {
			case i == j:
				cells[j] = "."
			case m.ok[i][j]:
				cells[j] = "ok"
			default:
				cells[j] = "--"
			}
		}
		fmt.Fprintf(tw, "%s\t%s\n", from, strings.Join(cells, "\t"))
	}
	tw.Flush()
	ok, total := m.counts()
	verdict := "all ok"
	if ok != total {
		verdict = fmt.Sprintf("%d FAILED", total-ok)
	}
	fmt.Fprintf(w, "%s: %d/%d pings ok: %s\n", m.family, ok, total, verdict)
}

// printStatuses prints every host's `netagent status`, run inside the host
// namespace against its agent's status socket. A host whose agent does not
// answer gets the error and the end of the agent's log instead.
func printStatuses(ctx context.Context, w io.Writer, run execFunc, netagentBin string, hosts []hostState) {
	for _, h := range hosts {
		fmt.Fprintf(w, "\n=== %s (namespace %s, underlay %s) ===\n", h.Name, h.NS, joinSet(h.Underlay, h.UnderlayV6))
		sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		out, err := run(sctx, h.NS, netagentBin, "status", "--status-socket="+h.StatusSocket)
		cancel()
		if err != nil {
			fmt.Fprintf(w, "netagent status failed: %v\n", err)
			if h.AgentLog != "" {
				fmt.Fprintf(w, "--- end of %s:\n%s\n", h.AgentLog, tail(h.AgentLog, 20))
			}
			continue
		}
		w.Write(out)
	}
	fmt.Fprintln(w)
}

// agentReport is the part of `netagent status --json` the lab waits on.
type agentReport struct {
	Lease *struct {
		Subnet     string `json:"subnet"`
		IPv6Subnet string `json:"ipv6_subnet"`
	} `json:"lease"`
	Backend *struct {
		LastPass *time.Time `json:"last_pass"`
	} `json:"backend"`
	Peers []struct {
		Subnet     string `json:"subnet"`
		Programmed bool   `json:"programmed"`
		Error      string `json:"error"`
	} `json:"peers"`
}

// converged reports why h's agent has not yet leased a subnet of each
// family in fams and programmed a route to each of the other hosts'
// leases (peers of each family), or nil once it has.
func converged(ctx context.Context, run execFunc, netagentBin string, h hostState, peers int, fams []family) error {
	out, err := run(ctx, h.NS, netagentBin, "status", "--json", "--status-socket="+h.StatusSocket)
	if err != nil {
		return err
	}
	var r agentReport
	if err := json.Unmarshal(out, &r); err != nil {
		return fmt.Errorf("netagent status --json: %w", err)
	}
	switch {
	case r.Lease == nil || (r.Lease.Subnet == "" && r.Lease.IPv6Subnet == ""):
		return errors.New("no lease yet")
	case r.Backend == nil || r.Backend.LastPass == nil:
		return errors.New("data plane not programmed yet")
	case len(r.Peers) != peers*len(fams):
		return fmt.Errorf("%d peers, want %d", len(r.Peers), peers*len(fams))
	}
	perFamily := make(map[family]int)
	for _, p := range r.Peers {
		if !p.Programmed {
			return fmt.Errorf("peer %s not programmed: %s", p.Subnet, p.Error)
		}
		if f, ok := familyOf(p.Subnet); ok {
			perFamily[f]++
		}
	}
	for _, f := range fams {
		if (f == ipv6 && r.Lease.IPv6Subnet == "") || (f == ipv4 && r.Lease.Subnet == "") {
			return fmt.Errorf("no %s lease yet", f)
		}
		if perFamily[f] != peers {
			return fmt.Errorf("%d %s peers, want %d", perFamily[f], f, peers)
		}
	}
	return nil
}

// pollInterval is how often the lab polls the state it waits for.
const pollInterval = 100 * time.Millisecond

// awaitConverged polls every host's agent until each has programmed all
// its peers of every family in fams, or the deadline passes; it returns
// one error per host that did not.
func awaitConverged(ctx context.Context, run execFunc, netagentBin string, hosts []hostState, fams []family, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var errs []error
	for _, h := range hosts {
		err := await.Poll(ctx, pollInterval, func() error { return converged(ctx, run, netagentBin, h, len(hosts)-1, fams) })
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: not converged within %v: %w", h.Name, timeout, err))
		}
	}
	return errors.Join(errs...)
}

// tail returns the last n lines of the file at path.
func tail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Sprintf("(cannot read: %v)", err)
	}
	lines := bytes.Split(bytes.TrimRight(b, "\n"), []byte("\n"))
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return string(bytes.Join(lines, []byte("\n")))
}
