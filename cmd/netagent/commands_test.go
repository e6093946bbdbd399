package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

// commandNames are the commands `netagent help` must list, one line each.
var commandNames = []string{"run", "status", "config", "version", "help"}

// checkCommandList fails unless out lists every command at the start of a
// line of its own, each once.
func checkCommandList(t *testing.T, what, out string) {
	t.Helper()
	for _, name := range commandNames {
		n := 0
		for _, line := range strings.Split(out, "\n") {
			if f := strings.Fields(line); len(f) > 1 && f[0] == name && strings.HasPrefix(line, "  ") {
				n++
			}
		}
		if n != 1 {
			t.Errorf("%s: command %q is listed %d times, want once:\n%s", what, name, n, out)
		}
	}
}

func TestHelpListsCommands(t *testing.T) {
	for _, args := range [][]string{{"help"}, {"--help"}, {"-h"}, {"-help"}} {
		var out, errOut bytes.Buffer
		if err := run(context.Background(), args, func(string) string { return "" }, nil, &out, &errOut); err != nil {
			t.Fatalf("netagent %s: %v", args[0], err)
		}
		checkCommandList(t, "netagent "+args[0], out.String())
		if strings.Contains(out.String(), "Usage of run") {
			t.Errorf("netagent %s printed the flags of run:\n%s", args[0], out.String())
		}
	}
}

// TestBareCommandListsCommands: `netagent` alone prints the list on stderr
// and fails as a usage error (exit status 2); it does not start the agent.
func TestBareCommandListsCommands(t *testing.T) {
	var out, errOut bytes.Buffer
	err := run(context.Background(), nil, func(string) string { return "" }, nil, &out, &errOut)
	var u usageError
	if !errors.As(err, &u) {
		t.Fatalf("netagent with no argument: err = %v, want a usage error", err)
	}
	checkCommandList(t, "netagent", errOut.String())
	if out.Len() != 0 {
		t.Errorf("netagent with no argument wrote to stdout: %q", out.String())
	}
}

// TestFlagFirstRunsAgent: a first argument that is a flag goes to `run`,
// as flanneld is invoked: an invalid value is reported by run's parser.
func TestFlagFirstRunsAgent(t *testing.T) {
	var out, errOut bytes.Buffer
	err := run(context.Background(), []string{"--subnet-lease-renew-margin=soon"}, func(string) string { return "" }, nil, &out, &errOut)
	if err == nil || !strings.Contains(err.Error(), "subnet-lease-renew-margin") {
		t.Fatalf("err = %v, want run's error about --subnet-lease-renew-margin", err)
	}
	errOut.Reset()
	err = run(context.Background(), []string{"run", "-h"}, func(string) string { return "" }, nil, &out, &errOut)
	if !errors.Is(err, flag.ErrHelp) {
		t.Fatalf("netagent run -h: err = %v, want flag.ErrHelp", err)
	}
	if !strings.HasPrefix(errOut.String(), "usage: netagent run") || !strings.Contains(errOut.String(), "-etcd-endpoints") {
		t.Errorf("netagent run -h printed:\n%s", errOut.String())
	}
}

func TestPrintVersion(t *testing.T) {
	tests := []struct {
		bi   buildInfo
		want string
	}{
		{buildInfo{Version: "1.2.0", Commit: "4f9c2e1", GoVersion: "go1.26.0", Platform: "linux/amd64"},
			"netagent 1.2.0\ncommit:  4f9c2e1\ngo:      go1.26.0 linux/amd64\n"},
		{buildInfo{Version: "1.2.0-3-g4f9c2e1-dirty", Commit: "4f9c2e1", Modified: true, GoVersion: "go1.26.0", Platform: "linux/arm64"},
			"netagent 1.2.0-3-g4f9c2e1-dirty\ncommit:  4f9c2e1 (modified)\ngo:      go1.26.0 linux/arm64\n"},
		{buildInfo{Version: "0.1.0-dev", GoVersion: "go1.26.0", Platform: "linux/amd64"},
			"netagent 0.1.0-dev\ncommit:  unknown\ngo:      go1.26.0 linux/amd64\n"},
	}
	for _, tt := range tests {
		var b bytes.Buffer
		printVersion(&b, tt.bi)
		if b.String() != tt.want {
			t.Errorf("printVersion(%+v) =\n%s\nwant\n%s", tt.bi, b.String(), tt.want)
		}
	}
}

func TestVersionCommand(t *testing.T) {
	var out bytes.Buffer
	if err := run(context.Background(), []string{"version"}, func(string) string { return "" }, nil, &out, &bytes.Buffer{}); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "go:      "+runtime.Version()) {
		t.Errorf("netagent version does not name the Go version %s:\n%s", runtime.Version(), out.String())
	}
}

// TestVersionFromLdflags builds the command with the -ldflags the packaging
// uses and checks that `netagent version` prints them.
func TestVersionFromLdflags(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the command: not in -short")
	}
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("go command not found: %v", err)
	}
	bin := filepath.Join(t.TempDir(), "netagent")
	build := exec.Command(goBin, "build", "-ldflags", "-X main.version=9.8.7-test -X main.commit=0123456789abcdef", "-o", bin, ".")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	out, err := exec.Command(bin, "version").Output()
	if err != nil {
		t.Fatalf("netagent version: %v", err)
	}
	for _, want := range []string{"netagent 9.8.7-test\n", "commit:  0123456789abcdef\n", "go:      go1."} {
		if !strings.Contains(string(out), want) {
			t.Errorf("netagent version printed\n%s\nwant %q in it", out, want)
		}
	}
}
