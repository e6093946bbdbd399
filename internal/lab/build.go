package lab

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"strings"
)

// BuildBinaries builds the main packages pkgs into dir and returns each
// binary's path, keyed by the package as given. Packages are import paths
// or paths relative to the module root ("./cmd/netagent-lab"), whatever the
// caller's working directory inside the module.
//
// Equivalent to: `(cd MODULE_ROOT && go build -o DIR PKGS...)`.
func BuildBinaries(ctx context.Context, dir string, pkgs ...string) (map[string]string, error) {
	if len(pkgs) == 0 {
		return nil, errors.New("lab: BuildBinaries: no packages")
	}
	goBin, err := goCommand()
	if err != nil {
		return nil, err
	}
	gomod, err := exec.CommandContext(ctx, goBin, "env", "GOMOD").Output()
	if err != nil {
		return nil, fmt.Errorf("lab: go env GOMOD: %w", err)
	}
	root := filepath.Dir(strings.TrimSpace(string(gomod)))
	if root == "." || strings.TrimSpace(string(gomod)) == os.DevNull {
		return nil, errors.New("lab: BuildBinaries: not inside a Go module")
	}
	if dir, err = filepath.Abs(dir); err != nil {
		return nil, fmt.Errorf("lab: %w", err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("lab: %w", err)
	}
	cmd := exec.CommandContext(ctx, goBin, append([]string{"build", "-o", dir + string(filepath.Separator)}, pkgs...)...)
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("lab: go build %s: %w\n%s", strings.Join(pkgs, " "), err, bytes.TrimSpace(out))
	}
	bins := make(map[string]string, len(pkgs))
	for _, p := range pkgs {
		bin := filepath.Join(dir, path.Base(p))
		if _, err := os.Stat(bin); err != nil {
			return nil, fmt.Errorf("lab: go build %s: no binary: %w", p, err)
		}
		bins[p] = bin
	}
	return bins, nil
}

// goCommand finds the go command: on PATH (go test puts its GOROOT/bin
// first), else in $GOROOT/bin or /usr/local/go/bin.
func goCommand() (string, error) {
	if p, err := exec.LookPath("go"); err == nil {
		return p, nil
	}
	for _, p := range []string{filepath.Join(os.Getenv("GOROOT"), "bin", "go"), "/usr/local/go/bin/go"} {
		if fi, err := os.Stat(p); err == nil && !fi.IsDir() {
			return p, nil
		}
	}
	return "", errors.New("lab: go command not found")
}
