package agent

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"
	"time"
)

// TestErrorsToState: the store's warnings and errors reach the status's
// recent errors with their attributes, whatever the log level; what the
// log level hides is not logged.
func TestErrorsToState(t *testing.T) {
	var out bytes.Buffer
	s := newState(time.Now())
	log := slog.New(errorsToState{slog.NewTextHandler(&out, &slog.HandlerOptions{Level: slog.LevelError}), s}).With("store", "kubernetes")
	log.Info("node watch broke: listing again")
	log.Warn("cannot publish the lease", "node", "n1", "err", "forbidden")
	log.Error("the API server refuses to list nodes")
	var msgs []string
	for _, e := range s.recentErrs {
		msgs = append(msgs, e.Message)
	}
	want := []string{"cannot publish the lease node=n1 err=forbidden", "the API server refuses to list nodes"}
	if strings.Join(msgs, "|") != strings.Join(want, "|") {
		t.Errorf("recent errors %q, want %q", msgs, want)
	}
	if logged := out.String(); strings.Contains(logged, "cannot publish") || !strings.Contains(logged, "refuses to list nodes") || !strings.Contains(logged, "store=kubernetes") {
		t.Errorf("logged %q, want only the error, with the store", logged)
	}
}
