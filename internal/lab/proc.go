package lab

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/netagent/netagent/internal/netnsguard"
)

// Proc is a process the lab started inside one of its namespaces.
type Proc struct {
	// NS is the namespace the process runs in.
	NS string
	// Argv is the command line, without the `ip netns exec NS` prefix.
	Argv []string
	// LogPath is the file that receives the process's stdout and stderr.
	LogPath string

	cmd  *exec.Cmd
	done chan struct{}
	err  error // cmd.Wait's result, set before done is closed
}

// StartProcess starts argv inside the lab namespace ns, with the lab
// process's environment plus env plus NETAGENT_REFUSE_INITIAL_NETNS=1. Its
// stdout and stderr go to a new file in the lab's logs directory. The
// process is started as `ip netns exec NS ARGV...`, which execs into argv,
// so Proc's PID is argv's. Close kills it if it is still running, and so
// does the kernel if the lab process dies first.
func (l *Lab) StartProcess(ns string, env []string, argv ...string) (*Proc, error) {
	return l.start(ns, env, []string{"ip", "netns", "exec", ns}, argv)
}

// StartNsenter is StartProcess for programs that need the machine's own
// mounts: it enters only the network namespace, as `nsenter
// --net=/run/netns/NS ARGV...`, where `ip netns exec` would also mount a
// new /sys that hides the cgroup hierarchies (a container runtime then
// fails with "Devices cgroup isn't mounted"). nsenter execs into argv, so
// Proc's PID is argv's.
func (l *Lab) StartNsenter(ns string, env []string, argv ...string) (*Proc, error) {
	return l.start(ns, env, nsenterArgv(ns), argv)
}

// nsenterArgv is the command prefix that runs a program in the network
// namespace ns only.
func nsenterArgv(ns string) []string { return []string{"nsenter", "--net=" + NSPath(ns)} }

// StartProcessInNet is StartProcess without `ip netns exec`: argv is
// forked from a thread switched into ns's network namespace, so it enters
// that namespace only, as an agent on a real host runs — no private mount
// namespace, /sys not remounted, no /etc/netns/NS files, and no `ip`
// process exec'd first. For measuring what a process's start costs.
func (l *Lab) StartProcessInNet(ns string, env []string, argv ...string) (*Proc, error) {
	return l.start(ns, env, nil, argv)
}

// start starts wrapper+argv, where wrapper enters the lab namespace ns; with
// no wrapper, argv itself is forked from a thread in ns's network namespace.
func (l *Lab) start(ns string, env, wrapper, argv []string) (*Proc, error) {
	if err := l.checkOwned(ns); err != nil {
		return nil, err
	}
	if len(argv) == 0 {
		return nil, errors.New("lab: StartProcess: empty command")
	}
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return nil, errors.New("lab: closed")
	}
	l.seq++
	logPath := filepath.Join(l.dir, "logs", fmt.Sprintf("%02d-%s-%s.log", l.seq, strings.TrimPrefix(ns, l.prefix+"-"), filepath.Base(argv[0])))
	l.mu.Unlock()

	f, err := os.OpenFile(logPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("lab: %w", err)
	}
	defer f.Close() // the child has its own copy
	fmt.Fprintf(f, "# in %s: %s\n", ns, strings.Join(argv, " "))

	inNet := len(wrapper) == 0
	cmd := exec.Command(argv[0], argv[1:]...)
	if !inNet {
		cmd = exec.Command(wrapper[0], append(slices.Clone(wrapper[1:]), argv...)...)
	}
	cmd.Env = append(append(os.Environ(), env...), netnsguard.EnvRefuse+"=1")
	cmd.Stdout, cmd.Stderr = f, f
	cmd.SysProcAttr = &syscall.SysProcAttr{
		// Its own process group, so a terminal's Ctrl-C reaches only the
		// lab, which then stops its processes in order.
		Setpgid: true,
		// Die with the lab rather than outlive it.
		Pdeathsig: syscall.SIGKILL,
	}
	p := &Proc{NS: ns, Argv: argv, LogPath: logPath, cmd: cmd, done: make(chan struct{})}

	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return nil, errors.New("lab: closed")
	}
	start := cmd.Start
	if inNet {
		start = func() error { return startInNS(ns, cmd) }
	}
	if err := start(); err != nil {
		return nil, fmt.Errorf("lab: start %s in %s: %w", argv[0], ns, err)
	}
	l.procs[p] = struct{}{}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	l.log.Debug("started", "ns", ns, "pid", p.PID(), "argv", argv, "log", logPath)
	return p, nil
}

// PID is the process's ID.
func (p *Proc) PID() int { return p.cmd.Process.Pid }

// Done is closed when the process has exited and been reaped.
func (p *Proc) Done() <-chan struct{} { return p.done }

// Exited reports whether the process has exited.
func (p *Proc) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// Signal sends sig to the process; os.ErrProcessDone once it has exited.
func (p *Proc) Signal(sig os.Signal) error {
	if p.Exited() {
		return os.ErrProcessDone
	}
	return p.cmd.Process.Signal(sig)
}

// Wait waits for the process to exit and returns its exit error (nil for
// status 0, an *exec.ExitError otherwise), or ctx's error.
func (p *Proc) Wait(ctx context.Context) error {
	select {
	case <-p.done:
		return p.err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Kill sends SIGKILL and waits for the process to be reaped.
func (p *Proc) Kill() error {
	if err := p.Signal(syscall.SIGKILL); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return err
	}
	<-p.done
	return nil
}

// Stop sends SIGTERM, waits up to grace for the process to exit, then
// kills it. It returns the process's exit error (nil if it exited with
// status 0 on SIGTERM) or an error saying it had to be killed.
func (p *Proc) Stop(grace time.Duration) error {
	if p.stop(grace) {
		return fmt.Errorf("lab: %s did not exit within %v of SIGTERM: killed", p.Argv[0], grace)
	}
	return p.err
}

// stop is Stop, reporting whether SIGKILL was needed.
func (p *Proc) stop(grace time.Duration) (killed bool) {
	if p.Signal(syscall.SIGTERM) != nil {
		<-p.done
		return false
	}
	t := time.NewTimer(grace)
	defer t.Stop()
	select {
	case <-p.done:
		return false
	case <-t.C:
		_ = p.Kill()
		return true
	}
}

// Tail returns up to the last n bytes of the process's log.
func (p *Proc) Tail(n int) string {
	b, err := os.ReadFile(p.LogPath)
	if err != nil {
		return ""
	}
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return string(b)
}
