package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/netagent/netagent/internal/lab"
	"github.com/netagent/netagent/internal/lab/kubelab"
)

// configKey is where the agents read the network config (their default
// --etcd-prefix, as flannel's).
const configKey = "/coreos.com/network/config"

// convergeTimeout bounds the wait for every agent to program every peer
// before the ping matrix.
const convergeTimeout = 30 * time.Second

// up brings the lab up, prints its statuses and ping matrix, then, unless
// o.once, keeps it up until ctx is done; it always tears it down before
// returning.
func up(ctx context.Context, o *upOptions, bins map[string]string, binDir string, stdout io.Writer) (err error) {
	start := time.Now()
	say := func(format string, a ...any) { fmt.Fprintf(stdout, format+"\n", a...) }
	cfg, _, err := o.config()
	if err != nil {
		return err
	}
	st := &labState{
		PID: os.Getpid(), StartedAt: start, Dir: o.dir, Store: o.store, Backend: o.backend, Runtime: o.runtime, IPv6: o.ipv6,
		Binaries: bins, BinDir: binDir,
	}
	if o.ipv6 != ipv6Only {
		st.Network = o.network
	}
	if o.ipv6 != ipv6Off {
		st.IPv6Network = o.ipv6Network
	}
	say("bringing up a lab in %s: %d hosts, store %s, backend %s, network %s, %d containers per host (runtime %s)",
		o.dir, o.hosts+o.routedHosts, o.store, o.backend, joinSet(st.Network, st.IPv6Network), o.containers, o.runtime)
	var kb kubelab.Binaries
	if o.store == storeKube {
		if kb, err = kubeBinaries(ctx, say); err != nil {
			return upError(ctx, "kube-apiserver binaries", err)
		}
	}
	l, err := lab.New(ctx, lab.Options{
		Hosts: o.hosts, RoutedHosts: o.routedHosts, Dir: o.dir, LabBinary: bins["netagent-lab"],
		IPv6: labIPv6(o.ipv6),
	})
	if err != nil {
		return upError(ctx, "namespaces", err)
	}
	st.Prefix = l.Prefix()
	defer func() {
		t := time.Now()
		say("tearing down lab %s ...", l.Prefix())
		cerr := l.Close()
		keepLogs := err != nil && ctx.Err() == nil
		ferr := removeLabFiles(o.dir, keepLogs)
		if cerr != nil || ferr != nil {
			err = errors.Join(err, fmt.Errorf("teardown: %w", errors.Join(cerr, ferr)))
			return
		}
		say("lab %s removed (%.1fs)", l.Prefix(), time.Since(t).Seconds())
		if keepLogs {
			say("its logs are kept in %s", filepath.Join(o.dir, "logs"))
		}
	}()
	for _, h := range l.Hosts() {
		st.Hosts = append(st.Hosts, hostState{
			Name: h.Name, NS: h.NS, Underlay: prefixString(h.Underlay), UnderlayV6: prefixString(h.UnderlayV6),
			StatusSocket: filepath.Join(h.Dir, "netagent.sock"),
		})
	}
	st.Namespaces = l.Namespaces()
	if err := st.write(); err != nil {
		return err
	}
	say("namespaces up: prefix %s, hosts %s (%.1fs)", l.Prefix(), hostNames(st), time.Since(start).Seconds())

	t := time.Now()
	stepCtx, cancel := context.WithTimeout(ctx, o.timeout)
	defer cancel()
	flags, err := startStore(stepCtx, o, l, st, cfg, kb, say)
	if err != nil {
		return upError(ctx, o.store, err)
	}

	t = time.Now()
	agents, err := startAgents(stepCtx, l, st, bins["netagent"], flags)
	if err != nil {
		return upError(ctx, "agents", err)
	}
	for _, h := range st.Hosts {
		say("%s: lease %s, underlay %s, agent pid %d", h.Name, joinSet(h.Subnet, h.IPv6Subnet), joinSet(h.Underlay, h.UnderlayV6), h.AgentPID)
	}
	say("agents up (%.1fs)", time.Since(t).Seconds())

	t = time.Now()
	how := "attached through netagent-cni"
	switch o.runtime {
	case runtimeDocker, runtimePodman:
		how = "run by " + o.runtime
		st.Containers, err = runContainers(stepCtx, l, st, o.runtime, binDir, o.containers)
	default:
		st.Containers, err = attachContainers(stepCtx, l, st, binDir, o.containers)
	}
	if err != nil {
		return upError(ctx, "containers", err)
	}
	for _, c := range st.Containers {
		say("%s: %s on %s", c.Name, joinSet(c.IP, c.IPv6), c.Host)
	}
	if o.containers > 0 || o.runtime != runtimeNone {
		say("containers %s (%.1fs)", how, time.Since(t).Seconds())
	}
	st.Namespaces = l.Namespaces()
	if err := st.write(); err != nil {
		return err
	}

	t = time.Now()
	convErr := awaitConverged(ctx, l.Exec, bins["netagent"], st.Hosts, st.families(), convergeTimeout)
	if convErr != nil {
		say("not every agent programmed its peers:\n%v", convErr)
	} else {
		say("every agent has programmed its %d peers over %s (%.1fs)", len(st.Hosts)-1, familyNames(st.families()), time.Since(t).Seconds())
	}
	say("lab up in %.1fs", time.Since(start).Seconds())

	printStatuses(ctx, stdout, l.Exec, bins["netagent"], st.Hosts)
	ms := pingMatrices(ctx, l.Exec, st.Containers, st.families())
	printMatrices(stdout, ms)
	if ctx.Err() != nil {
		return errors.New("up: interrupted")
	}
	pingErr := pingFailures(ms)
	if pingErr != nil || convErr != nil {
		printAgentTails(stdout, st)
	}
	if o.once {
		if pingErr != nil {
			return fmt.Errorf("up: %w", pingErr)
		}
		return nil
	}
	printHowTo(stdout, st, o.dir)
	st.Ready = true // for status, and for `up --detach` waiting on it
	if err := st.write(); err != nil {
		return err
	}
	return waitDown(ctx, stdout, agents)
}

// upError names the step that failed, or says the lab was interrupted.
func upError(ctx context.Context, step string, err error) error {
	if ctx.Err() != nil {
		return errors.New("up: interrupted")
	}
	return fmt.Errorf("up: %s: %w", step, err)
}

func hostNames(st *labState) string {
	var names []string
	for _, h := range st.Hosts {
		names = append(names, h.Name)
	}
	return strings.Join(names, " ")
}

// startAgents starts netagent on every host and waits until each has
// written its subnet file, filling in st.Hosts' leases and PIDs. An agent
// that exits or does not lease in time fails the step, with the end of its
// log.
func startAgents(ctx context.Context, l *lab.Lab, st *labState, netagentBin string, flags agentFlags) ([]*agentProc, error) {
	var agents []*agentProc
	for i, h := range l.Hosts() {
		hs := &st.Hosts[i]
		// Hosts share one filesystem: each gets its own WireGuard key
		// file and UAPI socket directory (used by the wireguard backend).
		env, storeArgs := flags(h)
		env = append(env, "WIREGUARD_KEY_FILE="+filepath.Join(h.Dir, "wgkey"))
		argv := append([]string{netagentBin, "run"}, storeArgs...)
		p, err := l.StartProcess(h.NS, env, append(argv,
			"--subnet-file="+h.SubnetFile(),
			"--docker-opts-file="+h.DockerOptsFile(),
			"--status-socket="+hs.StatusSocket,
			"--wireguard-socket-dir="+filepath.Join(h.Dir, "wireguard"),
			"--ip-masq",
		)...)
		if err != nil {
			return nil, err
		}
		hs.AgentPID, hs.AgentLog = p.PID(), p.LogPath
		agents = append(agents, &agentProc{host: h.Name, proc: p})
	}
	errs := make([]error, len(agents))
	var wg sync.WaitGroup
	for i, h := range l.Hosts() {
		wg.Go(func() {
			actx, cancel := context.WithCancel(ctx)
			defer cancel()
			go func() {
				select {
				case <-agents[i].proc.Done():
					cancel()
				case <-actx.Done():
				}
			}()
			info, err := lab.AwaitSubnetFile(actx, h)
			if err != nil {
				if agents[i].proc.Exited() {
					err = fmt.Errorf("%s: netagent exited: %v", h.Name, agents[i].proc.Wait(ctx))
				}
				errs[i] = fmt.Errorf("%w\n--- end of %s:\n%s", err, agents[i].proc.LogPath, tail(agents[i].proc.LogPath, 20))
				return
			}
			st.Hosts[i].Subnet, st.Hosts[i].IPv6Subnet = prefixString(info.Subnet), prefixString(info.IPv6Subnet)
			for _, f := range st.families() {
				if st.Hosts[i].lease(f) == "" {
					errs[i] = fmt.Errorf("%s: the subnet file %s has no %s lease", h.Name, h.SubnetFile(), f)
				}
			}
		})
	}
	wg.Wait()
	return agents, errors.Join(errs...)
}

// attachContainers makes n container namespaces on every host and
// attaches each through the host's CNI chain; hosts in parallel, the
// containers of one host one after the other.
func attachContainers(ctx context.Context, l *lab.Lab, st *labState, binDir string, n int) ([]containerState, error) {
	return eachHost(l.Hosts(), func(i int, h *lab.Host) (out []containerState, _ error) {
		a, err := newAttacher(h, binDir, st.Hosts[i].StatusSocket)
		if err != nil {
			return nil, err
		}
		for k := 1; k <= n; k++ {
			c, err := l.AddContainerNS(ctx, h, fmt.Sprintf("c%d", k))
			if err != nil {
				return out, err
			}
			addrs, err := a.add(ctx, c)
			if err != nil {
				return out, fmt.Errorf("%s: %w", h.Name, err)
			}
			cs := containerState{Name: h.Name + "-" + c.Name, NS: c.NS, Host: h.Name}
			for _, f := range st.families() {
				p, ok := addrs[f]
				if !ok {
					return out, fmt.Errorf("%s: CNI ADD of %s: no %s address in the result", h.Name, c.NS, f)
				}
				if f == ipv6 {
					cs.IPv6 = p.Addr().String()
				} else {
					cs.IP = p.Addr().String()
				}
			}
			out = append(out, cs)
		}
		return out, nil
	})
}

// eachHost runs f for every host (i its index) in parallel, and returns
// the containers of every host, h1's first, and their errors joined.
func eachHost(hosts []*lab.Host, f func(i int, h *lab.Host) ([]containerState, error)) ([]containerState, error) {
	perHost := make([][]containerState, len(hosts))
	errs := make([]error, len(hosts))
	var wg sync.WaitGroup
	for i, h := range hosts {
		wg.Go(func() { perHost[i], errs[i] = f(i, h) })
	}
	wg.Wait()
	var all []containerState
	for _, cs := range perHost {
		all = append(all, cs...)
	}
	return all, errors.Join(errs...)
}

// agentProc is a host's running agent.
type agentProc struct {
	host string
	proc *lab.Proc
}

// printAgentTails prints the end of every agent's log, after a failure.
func printAgentTails(w io.Writer, st *labState) {
	for _, h := range st.Hosts {
		if h.AgentLog != "" {
			fmt.Fprintf(w, "\n--- %s: end of %s:\n%s\n", h.Name, h.AgentLog, tail(h.AgentLog, 15))
		}
	}
}

// printHowTo tells the user how to get into the running lab.
func printHowTo(w io.Writer, st *labState, dir string) {
	cmd := func(sub, rest string) string {
		c := st.Binaries["netagent-lab"] + " " + sub
		if dir != defaultDir {
			c += " --dir " + dir
		}
		return c + rest
	}
	fmt.Fprintf(w, "\nThe lab is up (pid %d). State: %s; logs: %s\n", st.PID, statePath(dir), filepath.Join(dir, "logs"))
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "  %s\t# a command on a host\n", cmd("exec", " h1 -- ip route"))
	fmt.Fprintf(tw, "  %s\t# the host's agent\n", cmd("exec", " h1 -- netagent status"))
	if n := len(st.Containers); n > 1 {
		for _, f := range st.families() {
			fmt.Fprintf(tw, "  %s\t# from a container to another over %s\n", cmd("exec", " "+st.Containers[0].Name+" -- ping -c 3 "+st.Containers[n-1].addr(f)), f)
		}
	}
	fmt.Fprintf(tw, "  %s\t# a shell on h1\n", cmd("exec", " h1 -- bash"))
	fmt.Fprintf(tw, "  %s\t# statuses and ping matrix again\n", cmd("status", ""))
	fmt.Fprintf(tw, "  %s\t# tear it down (or SIGINT/SIGTERM to pid %d)\n", cmd("down", ""), st.PID)
	tw.Flush()
}

// waitDown keeps the lab up until ctx is done (SIGINT, SIGTERM from
// `netagent-lab down`), reporting an agent that exits meanwhile.
func waitDown(ctx context.Context, w io.Writer, agents []*agentProc) error {
	exited := make(chan *agentProc)
	for _, a := range agents {
		go func() {
			select {
			case <-a.proc.Done():
				select {
				case exited <- a:
				case <-ctx.Done():
				}
			case <-ctx.Done():
			}
		}()
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case a := <-exited:
			fmt.Fprintf(w, "%s: netagent exited (%v); end of %s:\n%s\n", a.host, a.proc.Wait(ctx), a.proc.LogPath, tail(a.proc.LogPath, 15))
		}
	}
}
