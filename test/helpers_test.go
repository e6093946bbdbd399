package test

import (
	"fmt"
	"strings"

	"github.com/netagent/netagent/internal/lab"
)

func errorf(format string, args ...any) error { return fmt.Errorf(format, args...) }

// logContains returns nil when p's log holds s.
func logContains(p *lab.Proc, s string) error {
	if tail := p.Tail(400); !strings.Contains(tail, s) {
		return fmt.Errorf("log lacks %q; last lines:\n%s", s, lastLines(tail, 5))
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
