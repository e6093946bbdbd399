package test

import (
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// notifyMsg is one datagram on the test's NOTIFY_SOCKET, with whether the
// subnet file existed when it arrived.
type notifyMsg struct {
	text           string
	subnetFileSeen bool
}

// TestSystemdNotify: an agent run as by systemd (NOTIFY_SOCKET and
// WATCHDOG_USEC set) sends STATUS= updates, then READY=1 only once the
// subnet file exists, then WATCHDOG=1 pings while it serves.
func TestSystemdNotify(t *testing.T) {
	t.Parallel()
	c := newCluster(t, clusterOptions{Hosts: 1, Config: vxlanConfig})
	h := c.hosts()[0]
	sock := filepath.Join(t.TempDir(), "notify.sock")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sock, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })

	p, err := c.lab.StartProcess(h.NS, []string{"NOTIFY_SOCKET=" + sock, "WATCHDOG_USEC=1000000"}, c.agentArgs(h)...)
	if err != nil {
		t.Fatal(err)
	}
	c.mu.Lock()
	c.agents[h.Name] = p
	c.mu.Unlock()

	var msgs []notifyMsg
	readyAt, pingsAfterReady := -1, 0
	deadline := time.Now().Add(30 * time.Second)
	buf := make([]byte, 4096)
	for pingsAfterReady < 2 {
		if err := conn.SetReadDeadline(deadline); err != nil {
			t.Fatal(err)
		}
		n, err := conn.Read(buf)
		if err != nil {
			t.Fatalf("after %d messages %+v: %v\nagent:\n%s", len(msgs), msgs, err, p.Tail(30))
		}
		_, statErr := os.Stat(h.SubnetFile())
		for _, line := range strings.Split(string(buf[:n]), "\n") {
			m := notifyMsg{text: line, subnetFileSeen: statErr == nil}
			msgs = append(msgs, m)
			switch {
			case line == "READY=1" && readyAt < 0:
				readyAt = len(msgs) - 1
			case line == "WATCHDOG=1" && readyAt >= 0:
				pingsAfterReady++
			}
		}
	}
	ready := msgs[readyAt]
	if !ready.subnetFileSeen {
		t.Errorf("READY=1 arrived before the subnet file was written")
	}
	var statusBefore []string
	for _, m := range msgs[:readyAt] {
		if strings.HasPrefix(m.text, "STATUS=") {
			statusBefore = append(statusBefore, m.text)
		}
	}
	if len(statusBefore) < 2 {
		t.Errorf("STATUS= updates before READY=1: %q, want at least two (waiting, acquiring, programming)", statusBefore)
	}
	if !strings.Contains(strings.Join(statusBefore, "\n"), "lease") {
		t.Errorf("no STATUS= update about the lease before READY=1: %q", statusBefore)
	}
	if next := msgs[readyAt+1].text; !strings.HasPrefix(next, "STATUS=serving ") {
		t.Errorf("READY=1 is followed by %q, want STATUS=serving <subnet>", next)
	}
}

// TestSystemdUnitsVerify: the shipped units pass `systemd-analyze verify`
// (with the binaries they start pointed at existing files, which verify
// requires): netagent.service, and docker.service with the drop-in.
func TestSystemdUnitsVerify(t *testing.T) {
	t.Parallel()
	sa, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Fatalf("systemd-analyze is not installed (scripts/deps.sh installs package systemd): %v", err)
	}
	bin := binaries(t)["./cmd/netagent"]
	dir := t.TempDir()
	copyUnit := func(src, dst string, replace ...string) {
		t.Helper()
		b, err := os.ReadFile(filepath.Join("..", "dist", src))
		if err != nil {
			t.Fatal(err)
		}
		text := strings.NewReplacer(replace...).Replace(string(b))
		if err := os.MkdirAll(filepath.Dir(filepath.Join(dir, dst)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, dst), []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	copyUnit("netagent.service", "netagent.service", "/usr/bin/netagent", bin)
	copyUnit("docker.service.d/10-netagent.conf", "docker.service.d/10-netagent.conf", "/usr/bin/dockerd", "/bin/true")
	if err := os.WriteFile(filepath.Join(dir, "docker.service"), []byte("[Unit]\nDescription=stand-in for Docker\n[Service]\nExecStart=/bin/true\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, unit := range []string{"netagent.service", "docker.service"} {
		cmd := exec.Command(sa, "verify", filepath.Join(dir, unit))
		cmd.Env = append(os.Environ(), "SYSTEMD_UNIT_PATH="+dir+":")
		out, err := cmd.CombinedOutput()
		var ee *exec.ExitError
		if err != nil && !errors.As(err, &ee) {
			t.Fatal(err)
		}
		// verify also reports problems of unrelated units of the host:
		// only lines about ours count.
		for _, line := range strings.Split(string(out), "\n") {
			if strings.Contains(line, dir) || strings.HasPrefix(line, unit) {
				t.Errorf("systemd-analyze verify %s: %s", unit, line)
			}
		}
		if err != nil {
			t.Logf("systemd-analyze verify %s exited %v:\n%s", unit, err, out)
		}
	}
	// The service is Type=notify with a watchdog, as the agent supports.
	b, _ := os.ReadFile(filepath.Join(dir, "netagent.service"))
	for _, want := range []string{"Type=notify", "WatchdogSec=", "EnvironmentFile=-/etc/sysconfig/netagent", "$NETAGENT_OPTIONS"} {
		if !strings.Contains(string(b), want) {
			t.Errorf("netagent.service lacks %q", want)
		}
	}
}
