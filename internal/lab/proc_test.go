package lab

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/netagent/netagent/internal/await"
	"github.com/netagent/netagent/internal/netnsguard"
)

func TestProcessesAndClose(t *testing.T) {
	t.Parallel()
	requireRoot(t)
	before := rootState(t)
	l, err := New(testCtx(t, 30*time.Second), Options{Hosts: 1, Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	ctx := testCtx(t, 30*time.Second)
	h := l.Hosts()[0]

	sleeper, err := l.StartProcess(h.NS, []string{"LAB_TEST=1"}, "sleep", "60")
	if err != nil {
		t.Fatal(err)
	}
	// Once ip netns exec has exec'd into sleep, the PID is in the host's
	// namespace, with the lab's environment. Read during the exec, the
	// comm may already say sleep while environ is still empty (the kernel
	// sets the new command name before it lays out the new environment),
	// so the environment is part of what is waited for.
	var env []byte
	await.Eventually(t, 30*time.Second, "sleep in the host namespace with the lab's environment", func() error {
		got, err1 := netnsguard.Stat(fmt.Sprintf("/proc/%d/ns/net", sleeper.PID()))
		want, err2 := netnsguard.Stat(NSPath(h.NS))
		comm, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", sleeper.PID()))
		if err1 != nil || err2 != nil || got != want || strings.TrimSpace(string(comm)) != "sleep" {
			return fmt.Errorf("not yet sleep in %s (comm %q)", h.NS, strings.TrimSpace(string(comm)))
		}
		var err error
		if env, err = os.ReadFile(fmt.Sprintf("/proc/%d/environ", sleeper.PID())); err != nil {
			return err
		}
		for _, want := range []string{"NETAGENT_REFUSE_INITIAL_NETNS=1", "LAB_TEST=1"} {
			if !strings.Contains("\x00"+string(env)+"\x00", "\x00"+want+"\x00") {
				return fmt.Errorf("process environment lacks %s: %q", want, env)
			}
		}
		return nil
	})

	exiter, err := l.StartProcess(h.NS, nil, "sh", "-c", "echo hello from the lab; exit 3")
	if err != nil {
		t.Fatal(err)
	}
	var exitErr *exec.ExitError
	if err := exiter.Wait(ctx); !errors.As(err, &exitErr) || exitErr.ExitCode() != 3 {
		t.Errorf("Wait = %v, want exit status 3", err)
	}
	if tail := exiter.Tail(200); !strings.Contains(tail, "hello from the lab") {
		t.Errorf("log %q lacks the output", tail)
	}
	if err := exiter.Signal(syscall.SIGTERM); !errors.Is(err, os.ErrProcessDone) {
		t.Errorf("Signal after exit = %v, want os.ErrProcessDone", err)
	}

	// A process that ignores SIGTERM and leaves a child behind: Close
	// kills it after the grace period and the child with the namespace.
	stubborn, err := l.StartProcess(h.NS, nil, "sh", "-c", `trap "" TERM; sleep 60 & echo "child $!"; wait`)
	if err != nil {
		t.Fatal(err)
	}
	var child int
	await.Eventually(t, 30*time.Second, "the child's PID in the log", await.True(func() bool {
		m := regexp.MustCompile(`child (\d+)`).FindStringSubmatch(stubborn.Tail(200))
		if m == nil {
			return false
		}
		child, _ = strconv.Atoi(m[1])
		return true
	}))

	if _, err := l.Exec(ctx, "", "true"); !errors.Is(err, ErrForeignNamespace) {
		t.Errorf("Exec in the current namespace = %v, want ErrForeignNamespace", err)
	}
	if _, err := l.StartProcess("some-other-ns", nil, "true"); !errors.Is(err, ErrForeignNamespace) {
		t.Errorf("StartProcess in a foreign namespace = %v, want ErrForeignNamespace", err)
	}

	if err := l.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	for _, pid := range []int{sleeper.PID(), stubborn.PID(), child} {
		assertGone(t, pid)
	}
	if left := labNamespaces(t, l.Prefix()); len(left) > 0 {
		t.Errorf("namespaces left: %v", left)
	}
	if err := l.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if _, err := l.StartProcess(h.NS, nil, "true"); err == nil {
		t.Error("StartProcess after Close succeeded")
	}
	if after := rootState(t); after != before {
		t.Errorf("initial namespace changed:\nbefore:\n%s\nafter:\n%s", before, after)
	}
}

// assertGone fails unless pid is gone (or a zombie) within the wait.
func assertGone(t *testing.T, pid int) {
	t.Helper()
	await.Eventually(t, 30*time.Second, fmt.Sprintf("process %d to be gone", pid), await.True(func() bool {
		stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if errors.Is(err, os.ErrNotExist) {
			return true
		}
		// "PID (comm) STATE ...": a zombie has exited.
		s := string(stat)
		i := strings.LastIndexByte(s, ')')
		return i > 0 && len(s) > i+2 && s[i+2] == 'Z'
	}))
}

// TestStartProcessInNet: a process started with StartProcessInNet is born
// in the host's network namespace (no `ip netns exec` in between: already
// there when Start returns), shares the lab process's mount namespace,
// has the lab's environment, and is killed by Close; the lab process's
// own namespace is unchanged.
func TestStartProcessInNet(t *testing.T) {
	t.Parallel()
	requireRoot(t)
	l, err := New(testCtx(t, 30*time.Second), Options{Hosts: 1, Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	h := l.Hosts()[0]
	ownNet, err := netnsguard.Stat("/proc/self/ns/net")
	if err != nil {
		t.Fatal(err)
	}

	sleeper, err := l.StartProcessInNet(h.NS, []string{"LAB_TEST=1"}, "sleep", "60")
	if err != nil {
		t.Fatal(err)
	}
	proc := func(f string) string { return fmt.Sprintf("/proc/%d/%s", sleeper.PID(), f) }
	got, err1 := netnsguard.Stat(proc("ns/net"))
	want, err2 := netnsguard.Stat(NSPath(h.NS))
	if err1 != nil || err2 != nil || got != want {
		t.Errorf("started process's network namespace %v (%v), want the host's %v (%v)", got, err1, want, err2)
	}
	mnt, err1 := netnsguard.Stat(proc("ns/mnt"))
	ownMnt, err2 := netnsguard.Stat("/proc/self/ns/mnt")
	if err1 != nil || err2 != nil || mnt != ownMnt {
		t.Errorf("started process's mount namespace %v (%v), want the lab's %v (%v)", mnt, err1, ownMnt, err2)
	}
	await.Eventually(t, 30*time.Second, "sleep with the lab's environment", func() error {
		env, err := os.ReadFile(proc("environ"))
		if err != nil {
			return err
		}
		for _, want := range []string{"NETAGENT_REFUSE_INITIAL_NETNS=1", "LAB_TEST=1"} {
			if !strings.Contains("\x00"+string(env)+"\x00", "\x00"+want+"\x00") {
				return fmt.Errorf("process environment lacks %s: %q", want, env)
			}
		}
		return nil
	})
	if after, err := netnsguard.Stat("/proc/self/ns/net"); err != nil || after != ownNet {
		t.Errorf("the lab process's network namespace changed: %v (%v), was %v", after, err, ownNet)
	}
	if _, err := l.StartProcessInNet("some-other-ns", nil, "true"); !errors.Is(err, ErrForeignNamespace) {
		t.Errorf("StartProcessInNet in a foreign namespace = %v, want ErrForeignNamespace", err)
	}

	if err := l.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	assertGone(t, sleeper.PID())
}
