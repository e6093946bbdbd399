package main

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/netagent/netagent/internal/lab"
)

func TestResolve(t *testing.T) {
	s := &labState{
		Prefix: "naab12",
		Dir:    "/run/x",
		// A tampered file: names without the prefix must never be used.
		Namespaces: []string{"naab12-sw", "naab12-etcd", "naab12-h1", "naab12-h1-c1", "other-h2", "naab12"},
		Hosts:      []hostState{{Name: "h1", NS: "naab12-h1"}},
		Containers: []containerState{{Name: "h1-c1", NS: "naab12-h1-c1", Host: "h1"}},
	}
	tests := []struct {
		name, want string
	}{
		{"h1", "naab12-h1"},
		{"h1-c1", "naab12-h1-c1"},
		{"etcd", "naab12-etcd"},
		{"naab12-sw", "naab12-sw"},
		{"h2", ""},
		{"other-h2", ""},
		{"naab12", ""},
		{"", ""},
		{"default", ""},
		{"../naab12-h1", ""},
	}
	for _, tt := range tests {
		got, err := s.resolve(tt.name)
		if got != tt.want || (err == nil) != (tt.want != "") {
			t.Errorf("resolve(%q) = %q, %v; want %q", tt.name, got, err, tt.want)
		}
	}
	// command refuses what resolve would, even if asked directly.
	for _, ns := range []string{"other-h2", "naab12-h9"} {
		if _, err := s.command(t.Context(), ns, "true"); !errors.Is(err, lab.ErrForeignNamespace) {
			t.Errorf("command(%q) = %v, want ErrForeignNamespace", ns, err)
		}
	}
}

func TestStateFile(t *testing.T) {
	dir := t.TempDir()
	if _, err := readState(dir); !errors.Is(err, errNoLab) {
		t.Errorf("readState of an empty dir = %v, want errNoLab", err)
	}
	// A process that has exited and been reaped: not a running lab.
	gone := exec.Command("true")
	if err := gone.Run(); err != nil {
		t.Fatal(err)
	}
	s := &labState{PID: gone.Process.Pid, Prefix: "naab12", Dir: dir, Hosts: []hostState{{Name: "h1", NS: "naab12-h1"}}}
	if err := s.write(); err != nil {
		t.Fatal(err)
	}
	got, err := readState(dir)
	if err != nil || got.Prefix != "naab12" || len(got.Hosts) != 1 || got.Hosts[0].NS != "naab12-h1" {
		t.Errorf("readState = %+v, %v", got, err)
	}
	if _, err := readRunningState(dir); err == nil || !strings.Contains(err.Error(), "not running") {
		t.Errorf("readRunningState = %v, want not running", err)
	}
	if err := os.WriteFile(filepath.Join(dir, stateFileName), []byte(`{"pid":0}`), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := readState(dir); err == nil {
		t.Error("readState accepted a state without prefix and pid")
	}
	if err := removeLabFiles(dir, false); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("empty lab dir not removed: %v", err)
	}
}

func TestMatrixPrint(t *testing.T) {
	m := matrix{
		names: []string{"h1-c1", "h2-c1", "h3-c1"},
		ok: [][]bool{
			{true, true, true}, // the diagonal is ignored
			{true, false, false},
			{true, false, false},
		},
	}
	if ok, total := m.counts(); ok != 4 || total != 6 {
		t.Errorf("counts = %d/%d, want 4/6", ok, total)
	}
	var b bytes.Buffer
	m.print(&b)
	want := `ping matrix (row: from, column: to):
       h1-c1  h2-c1  h3-c1
h1-c1  .      ok     ok
h2-c1  ok     .      --
h3-c1  ok     --     .
4/6 pings ok: 2 FAILED
`
	if b.String() != want {
		t.Errorf("print:\n%s\nwant:\n%s", b.String(), want)
	}
}
