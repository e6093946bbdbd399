package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestStatusNotAnswering: `netagent status` tells a socket nobody listens
// on (not running) from one that accepts but never answers, as a stopped
// (SIGSTOP) agent's does (not answering); both exit 1.
func TestStatusNotAnswering(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	// A listener that never accepts: the kernel completes connections
	// into its backlog, and no answer ever comes, as with a stopped agent.
	wedged := filepath.Join(dir, "wedged.sock")
	ln, err := net.Listen("unix", wedged)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	// A socket file left behind by an agent that is gone.
	gone := filepath.Join(dir, "gone.sock")
	gl, err := net.ListenUnix("unix", &net.UnixAddr{Name: gone, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	gl.SetUnlinkOnClose(false)
	gl.Close()
	// A closed port: the etcd part of the offline report fails at once.
	closed, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	etcdURL := "http://" + closed.Addr().String()
	closed.Close()

	for _, tc := range []struct {
		name, socket string
		want         error
		state, text  string
	}{
		{"no socket", filepath.Join(dir, "none.sock"), errNotRunning, "not running", "netagent is not running on this host"},
		{"socket left behind", gone, errNotRunning, "not running", "netagent is not running on this host"},
		{"stopped agent", wedged, errNotAnswering, "not answering", "netagent is NOT ANSWERING on " + wedged},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			for _, asJSON := range []bool{false, true} {
				args := []string{"status", "--status-socket=" + tc.socket, "--subnet-file=" + filepath.Join(dir, "none.env"), "--etcd-endpoints=" + etcdURL}
				if asJSON {
					args = append(args, "--json")
				}
				var stdout, stderr bytes.Buffer
				err := run(context.Background(), args, func(string) string { return "" }, os.Environ(), &stdout, &stderr)
				if !errors.Is(err, tc.want) {
					t.Errorf("json=%v: error %v, want %v", asJSON, err, tc.want)
				}
				var u usageError
				if errors.As(err, &u) {
					t.Errorf("json=%v: %v is a usage error (exit 2); want exit 1", asJSON, err)
				}
				if !asJSON {
					if !strings.HasPrefix(stdout.String(), tc.text) {
						t.Errorf("output starts %q; want %q", firstLine(stdout.String()), tc.text)
					}
					continue
				}
				var off OfflineReport
				if err := json.Unmarshal(stdout.Bytes(), &off); err != nil {
					t.Fatalf("json: %v\n%s", err, stdout.String())
				}
				if off.Running || off.State != tc.state {
					t.Errorf("json: running %v, state %q; want false, %q", off.Running, off.State, tc.state)
				}
			}
		})
	}
}

func firstLine(s string) string {
	line, _, _ := strings.Cut(s, "\n")
	return line
}
