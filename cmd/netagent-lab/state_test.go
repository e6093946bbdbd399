package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
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

// TestStateStore: the store a state file records, as status prints it; a
// state written before --store existed reads as etcd.
func TestStateStore(t *testing.T) {
	dir := t.TempDir()
	for _, tt := range []struct {
		file, want string
	}{
		{`{"pid":1,"prefix":"naab12","etcd_endpoint":"http://192.168.77.2:2379"}`, "etcd (http://192.168.77.2:2379)"},
		{`{"pid":1,"prefix":"naab12","store":"etcd","etcd_endpoint":"http://192.168.77.2:2379"}`, "etcd (http://192.168.77.2:2379)"},
		{`{"pid":1,"prefix":"naab12","store":"kubernetes","api_server":"https://192.168.77.2:6443"}`, "kubernetes (API server https://192.168.77.2:6443)"},
	} {
		if err := os.WriteFile(statePath(dir), []byte(tt.file), 0o644); err != nil {
			t.Fatal(err)
		}
		s, err := readState(dir)
		if err != nil {
			t.Fatal(err)
		}
		if got := s.store(); got != tt.want {
			t.Errorf("%s: store %q, want %q", tt.file, got, tt.want)
		}
	}
}

func TestMatrixPrint(t *testing.T) {
	m := matrix{
		family: ipv4,
		names:  []string{"h1-c1", "h2-c1", "h3-c1"},
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
	want := `IPv4 ping matrix (row: from, column: to):
       h1-c1  h2-c1  h3-c1
h1-c1  .      ok     ok
h2-c1  ok     .      --
h3-c1  ok     --     .
IPv4: 4/6 pings ok: 2 FAILED
`
	if b.String() != want {
		t.Errorf("print:\n%s\nwant:\n%s", b.String(), want)
	}

	full := matrix{family: ipv6, names: m.names, ok: [][]bool{{false, true, true}, {true, false, true}, {true, true, false}}}
	if err := pingFailures([]matrix{full}); err != nil {
		t.Errorf("pingFailures of a full matrix = %v", err)
	}
	// Any family's failure fails the lot, and is named.
	for _, ms := range [][]matrix{{m, full}, {full, m}} {
		err := pingFailures(ms)
		if err == nil || err.Error() != "2 of 12 pings failed (IPv4 2 of 6)" {
			t.Errorf("pingFailures = %v, want 2 of 12 failed over IPv4", err)
		}
	}
	failedV6 := full
	failedV6.ok = [][]bool{{false, false, true}, {true, false, true}, {true, true, false}}
	if err := pingFailures([]matrix{m, failedV6}); err == nil || err.Error() != "3 of 12 pings failed (IPv4 2 of 6, IPv6 1 of 6)" {
		t.Errorf("pingFailures = %v, want 3 of 12 failed over both families", err)
	}
}

// TestStateFamilies: the state file records the lab's families, and one
// written before --ipv6 existed reads as IPv4 only.
func TestStateFamilies(t *testing.T) {
	tests := []struct {
		json string
		want []family
	}{
		{`{"pid":1,"prefix":"naab12","network":"10.5.0.0/16"}`, []family{ipv4}},
		{`{"pid":1,"prefix":"naab12","network":"10.5.0.0/16","ipv6":"off"}`, []family{ipv4}},
		{`{"pid":1,"prefix":"naab12","network":"10.5.0.0/16","ipv6":"dual","ipv6_network":"fd00:5::/48"}`, []family{ipv4, ipv6}},
		{`{"pid":1,"prefix":"naab12","ipv6":"only","ipv6_network":"fd00:5::/48"}`, []family{ipv6}},
	}
	for _, tt := range tests {
		dir := t.TempDir()
		if err := os.WriteFile(filepath.Join(dir, stateFileName), []byte(tt.json), 0o644); err != nil {
			t.Fatal(err)
		}
		s, err := readState(dir)
		if err != nil {
			t.Fatal(err)
		}
		if got := s.families(); !slices.Equal(got, tt.want) {
			t.Errorf("%s: families %v, want %v", tt.json, got, tt.want)
		}
	}

	dir := t.TempDir()
	s := &labState{
		PID: 1, Prefix: "naab12", Dir: dir, IPv6: ipv6Only, IPv6Network: "fd00:5::/48",
		Hosts:      []hostState{{Name: "h1", NS: "naab12-h1", UnderlayV6: "fd77::11/64", IPv6Subnet: "fd00:5:0:1::/64"}},
		Containers: []containerState{{Name: "h1-c1", NS: "naab12-h1-c1", Host: "h1", IPv6: "fd00:5:0:1::2"}},
	}
	if err := s.write(); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(dir, stateFileName))
	if err != nil {
		t.Fatal(err)
	}
	// No empty IPv4 fields in an IPv6-only lab's file.
	for _, field := range []string{`"network"`, `"underlay"`, `"subnet"`, `"ip"`} {
		if bytes.Contains(b, []byte(field+":")) {
			t.Errorf("state file has %s:\n%s", field, b)
		}
	}
	got, err := readState(dir)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(got.families(), []family{ipv6}) || got.Hosts[0].lease(ipv6) != "fd00:5:0:1::/64" || got.Hosts[0].lease(ipv4) != "" ||
		got.Containers[0].addr(ipv6) != "fd00:5:0:1::2" || got.Containers[0].addr(ipv4) != "" {
		t.Errorf("state read back: %+v", got)
	}
}

// TestConverged checks what `up` waits on in an agent's status, per family.
func TestConverged(t *testing.T) {
	const programmedAt = `"backend":{"last_pass":"2026-01-01T00:00:00Z"}`
	tests := []struct {
		name, report string
		fams         []family
		wantErr      string // "" for converged
	}{
		{"IPv4", `{"lease":{"subnet":"10.5.1.0/24"},` + programmedAt + `,"peers":[{"subnet":"10.5.2.0/24","programmed":true}]}`, []family{ipv4}, ""},
		{"IPv6 only", `{"lease":{"ipv6_subnet":"fd00:5:0:1::/64"},` + programmedAt + `,"peers":[{"subnet":"fd00:5:0:2::/64","programmed":true}]}`, []family{ipv6}, ""},
		{"dual", `{"lease":{"subnet":"10.5.1.0/24","ipv6_subnet":"fd00:5:0:1::/64"},` + programmedAt +
			`,"peers":[{"subnet":"10.5.2.0/24","programmed":true},{"subnet":"fd00:5:0:2::/64","programmed":true}]}`, []family{ipv4, ipv6}, ""},
		{"dual without IPv6 peers", `{"lease":{"subnet":"10.5.1.0/24","ipv6_subnet":"fd00:5:0:1::/64"},` + programmedAt +
			`,"peers":[{"subnet":"10.5.2.0/24","programmed":true}]}`, []family{ipv4, ipv6}, "1 peers, want 2"},
		{"dual with two IPv4 peers", `{"lease":{"subnet":"10.5.1.0/24","ipv6_subnet":"fd00:5:0:1::/64"},` + programmedAt +
			`,"peers":[{"subnet":"10.5.2.0/24","programmed":true},{"subnet":"10.5.3.0/24","programmed":true}]}`, []family{ipv4, ipv6}, "2 IPv4 peers, want 1"},
		{"dual without IPv6 lease", `{"lease":{"subnet":"10.5.1.0/24"},` + programmedAt +
			`,"peers":[{"subnet":"10.5.2.0/24","programmed":true},{"subnet":"fd00:5:0:2::/64","programmed":true}]}`, []family{ipv4, ipv6}, "no IPv6 lease"},
		{"no lease", `{"lease":null}`, []family{ipv6}, "no lease yet"},
		{"not programmed", `{"lease":{"ipv6_subnet":"fd00:5:0:1::/64"},` + programmedAt +
			`,"peers":[{"subnet":"fd00:5:0:2::/64","programmed":false,"error":"boom"}]}`, []family{ipv6}, "not programmed: boom"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			run := func(ctx context.Context, ns string, argv ...string) ([]byte, error) {
				if ns != "naab12-h1" || !slices.Contains(argv, "--json") {
					return nil, fmt.Errorf("unexpected command in %s: %q", ns, argv)
				}
				return []byte(tt.report), nil
			}
			err := converged(t.Context(), run, "netagent", hostState{Name: "h1", NS: "naab12-h1"}, 1, tt.fams)
			if tt.wantErr == "" && err != nil || tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)) {
				t.Errorf("converged = %v, want %q", err, tt.wantErr)
			}
		})
	}
}
