package iface

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/netagent/netagent/internal/await"
)

// logBuf is a goroutine-safe log sink.
type logBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuf) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func newLog() (*slog.Logger, *logBuf) {
	b := &logBuf{}
	return slog.New(slog.NewTextHandler(b, nil)), b
}

func TestSelectWaitInterfaceAppears(t *testing.T) {
	t.Parallel()
	h := newNS(t)
	log, logs := newLog()
	// The deadlines of this test only bound a hang.
	const hang = time.Minute
	ctx, cancel := context.WithTimeout(t.Context(), 2*hang)
	defer cancel()

	type result struct {
		ext External
		err error
	}
	done := make(chan result, 1)
	go func() {
		ext, err := SelectWait(ctx, h, Options{EnableIPv4: true, Ifaces: []string{"veth5"}}, log)
		done <- result{ext, err}
	}()

	// Wait until SelectWait has failed once, so the interface really
	// appears while it is waiting.
	await.Eventually(t, hang, "SelectWait logs a failure", func() error {
		select {
		case r := <-done:
			t.Fatalf("SelectWait returned before veth5 exists: %+v, %v", r.ext, r.err)
		default:
		}
		if !strings.Contains(logs.String(), "veth5: no such interface") {
			return fmt.Errorf("log: %s", logs.String())
		}
		return nil
	})
	addVeth(t, h, "veth5", 0, true, "192.168.55.2/24")

	select {
	case r := <-done:
		if r.err != nil {
			t.Fatalf("SelectWait: %v", r.err)
		}
		if r.ext.Name != "veth5" || r.ext.Addr != ip("192.168.55.2") || r.ext.PublicIP != ip("192.168.55.2") {
			t.Errorf("SelectWait = %+v, want veth5 192.168.55.2", r.ext)
		}
	case <-time.After(hang):
		t.Fatal("SelectWait did not return after veth5 appeared")
	}
	if !strings.Contains(logs.String(), "external interface found") {
		t.Errorf("success after waiting not logged; log: %s", logs.String())
	}
}

// TestSelectWaitCancelled runs SelectWait on the fake clock of a synctest
// bubble (it waits on a timer between netlink lookups, which return at
// once): with a 500 ms deadline it tries at 0, 100 and 300 ms, and returns
// at 500 ms exactly, with an error that says why.
func TestSelectWaitCancelled(t *testing.T) {
	t.Parallel()
	h := newNS(t)
	synctest.Test(t, func(t *testing.T) {
		log, logs := newLog()
		ctx, cancel := context.WithTimeout(t.Context(), 500*time.Millisecond)
		defer cancel()
		start := time.Now()
		ext, err := SelectWait(ctx, h, Options{EnableIPv4: true, Ifaces: []string{"eth9"}}, log)
		if err == nil {
			t.Fatalf("SelectWait = %+v, want an error", ext)
		}
		if !errors.Is(err, context.DeadlineExceeded) || !errors.Is(err, ErrNoInterface) {
			t.Errorf("error %q is not both DeadlineExceeded and ErrNoInterface", err)
		}
		if d := time.Since(start); d != 500*time.Millisecond {
			t.Errorf("SelectWait returned after %v, want at the deadline (500ms)", d)
		}
		// Three attempts failed the same way: logged once.
		if n := strings.Count(logs.String(), "retrying"); n != 1 {
			t.Errorf("logged %d retries, want 1; log: %s", n, logs.String())
		}
	})
}

func TestSelectWaitInvalidOptions(t *testing.T) {
	// No namespace needed: the options are rejected before any lookup.
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	_, err := SelectWait(ctx, nil, Options{}, nil)
	if err == nil || errors.Is(err, context.DeadlineExceeded) || errors.Is(err, ErrNoInterface) {
		t.Fatalf("SelectWait with no family = %v, want an immediate option error", err)
	}
}
