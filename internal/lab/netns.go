package lab

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"github.com/netagent/netagent/internal/netnsguard"
)

// netnsDir is where `ip netns` keeps named namespaces.
const netnsDir = "/var/run/netns"

// ErrInitialNamespace is returned when a namespace the lab is about to
// program or dial into turns out to be the machine's initial one, or the
// lab process's own.
var ErrInitialNamespace = errors.New("lab: refusing to touch the initial network namespace")

// NSPath is the bind mount of the named namespace ns.
func NSPath(ns string) string { return filepath.Join(netnsDir, ns) }

// ListNamespaces returns the names of the named network namespaces.
//
// Equivalent to: `ip netns list`.
func ListNamespaces(ctx context.Context) ([]string, error) {
	out, err := exec.CommandContext(ctx, "ip", "netns", "list").Output()
	if err != nil {
		return nil, fmt.Errorf("lab: ip netns list: %w", err)
	}
	var names []string
	for _, line := range strings.Split(string(out), "\n") {
		// Lines read "NAME" or "NAME (id: N)".
		if f := strings.Fields(line); len(f) > 0 {
			names = append(names, f[0])
		}
	}
	return names, nil
}

// ownNetns is the lab process's own network namespace, read while the
// packages initialise (on the main thread, locked to the main goroutine).
// Read later, /proc/self/ns/net would name the main thread's namespace,
// which a goroutine locked to that thread may have switched into a lab
// namespace for a moment: concurrent dials then refused each other's
// namespaces.
var ownNetns, ownNetnsErr = netnsguard.Stat("/proc/self/ns/net")

// checkNotInitial returns ErrInitialNamespace if the namespace file at path
// is the calling process's network namespace, or the initial one.
func checkNotInitial(path string) error {
	target, err := netnsguard.Stat(path)
	if err != nil {
		return err
	}
	if ownNetnsErr != nil {
		return ownNetnsErr
	}
	if target == ownNetns {
		return fmt.Errorf("%w: %s is this process's namespace", ErrInitialNamespace, path)
	}
	initial, err := netnsguard.IsInitial(target)
	if err != nil {
		return err
	}
	if initial {
		return fmt.Errorf("%w: %s is the initial namespace", ErrInitialNamespace, path)
	}
	return nil
}

// InInitialNetns reports whether the calling thread is in the initial
// network namespace.
func InInitialNetns() (bool, error) { return netnsguard.InInitialNetns() }

// addNS creates the named namespace ns, checks that it is a new one, and
// brings its loopback up. The namespace is recorded before anything can
// fail, so Close removes it in any case.
//
// Equivalent to: `ip netns add NS; ip -n NS link set lo up`.
func (l *Lab) addNS(ctx context.Context, ns string) error {
	l.mu.Lock()
	closed := l.closed
	l.mu.Unlock()
	if closed {
		return errors.New("lab: closed")
	}
	if _, err := os.Stat(NSPath(ns)); err == nil {
		return fmt.Errorf("lab: namespace %s already exists", ns)
	}
	out, err := exec.CommandContext(ctx, "ip", "netns", "add", ns).CombinedOutput()
	if _, statErr := os.Stat(NSPath(ns)); statErr == nil {
		l.mu.Lock()
		l.namespaces = append(l.namespaces, ns)
		l.owned[ns] = true
		l.mu.Unlock()
	}
	if err != nil {
		return fmt.Errorf("lab: ip netns add %s: %w: %s", ns, err, bytes.TrimSpace(out))
	}
	if err := checkNotInitial(NSPath(ns)); err != nil {
		return err
	}
	return l.ip(ctx, ns, "link", "set", "lo", "up")
}

// deleteNS kills any process still inside ns (by PID: only processes the
// lab started or spawned can be there) and deletes the namespace.
//
// Equivalent to: `kill -KILL $(ip netns pids NS); ip netns del NS`.
func (l *Lab) deleteNS(ctx context.Context, ns string) error {
	if err := l.checkOwned(ns); err != nil {
		return err
	}
	if out, err := exec.CommandContext(ctx, "ip", "netns", "pids", ns).Output(); err == nil {
		for _, f := range strings.Fields(string(out)) {
			if pid, err := strconv.Atoi(f); err == nil && pid > 1 && pid != os.Getpid() {
				l.log.Warn("killing leftover process", "ns", ns, "pid", pid)
				_ = syscall.Kill(pid, syscall.SIGKILL)
			}
		}
	}
	out, err := exec.CommandContext(ctx, "ip", "netns", "del", ns).CombinedOutput()
	if _, statErr := os.Stat(NSPath(ns)); errors.Is(statErr, os.ErrNotExist) {
		l.mu.Lock()
		l.owned[ns] = false
		l.mu.Unlock()
		return nil
	}
	if err == nil {
		err = errors.New("namespace still there")
	}
	return fmt.Errorf("lab: ip netns del %s: %w: %s", ns, err, bytes.TrimSpace(out))
}

// ip runs `ip -n NS ARGS...` in a namespace of the lab.
func (l *Lab) ip(ctx context.Context, ns string, args ...string) error {
	if err := l.checkOwned(ns); err != nil {
		return err
	}
	argv := append([]string{"-n", ns}, args...)
	out, err := exec.CommandContext(ctx, "ip", argv...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("lab: ip %s: %w: %s", strings.Join(argv, " "), err, bytes.TrimSpace(out))
	}
	return nil
}

// ipBatch runs the ip commands cmds (without the leading "ip") in the lab
// namespace ns, stopping at the first failure.
//
// Equivalent to: `ip -n NS -batch -` with cmds on stdin.
func (l *Lab) ipBatch(ctx context.Context, ns string, cmds ...string) error {
	if err := l.checkOwned(ns); err != nil {
		return err
	}
	cmd := exec.CommandContext(ctx, "ip", "-n", ns, "-batch", "-")
	cmd.Stdin = strings.NewReader(strings.Join(cmds, "\n") + "\n")
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("lab: ip -n %s -batch: %w: %s", ns, err, bytes.TrimSpace(out))
	}
	return nil
}

// sysctl sets a sysctl inside the lab namespace ns.
//
// Equivalent to: `ip netns exec NS sysctl -qw KEY=VALUE`.
func (l *Lab) sysctl(ctx context.Context, ns, key, value string) error {
	_, err := l.Exec(ctx, ns, "sysctl", "-qw", key+"="+value)
	return err
}
