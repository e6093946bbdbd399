package test

import (
	"fmt"
	"os"
	"strings"

	"github.com/netagent/netagent/internal/lab"
)

func errorf(format string, args ...any) error { return fmt.Errorf(format, args...) }

// logContains returns nil when p's log holds s, anywhere (a line the test
// waits for may be followed by others before the test reads the log).
func logContains(p *lab.Proc, s string) error {
	b, err := os.ReadFile(p.LogPath)
	if err != nil {
		return err
	}
	if !strings.Contains(string(b), s) {
		return fmt.Errorf("log lacks %q; last lines:\n%s", s, lastLines(p.Tail(400), 5))
	}
	return nil
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
