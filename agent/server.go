package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// DefaultStatusSocket is where the agent answers `netagent status` and the
// CNI plugin's STATUS check.
const DefaultStatusSocket = "/run/netagent/netagent.sock"

// check is one named health check.
type check struct {
	Name string `json:"name"`
	OK   bool   `json:"ok"`
	Why  string `json:"why,omitempty"`
}

// readiness: the files are written and the data plane has been programmed
// at least once under the current lease.
func (s *state) readiness() []check {
	s.mu.Lock()
	defer s.mu.Unlock()
	c := []check{{Name: "lease", OK: s.lease != nil}, {Name: "files", OK: !s.filesAt.IsZero()}}
	if !c[0].OK {
		c[0].Why = "no lease held yet"
	}
	if !c[1].OK {
		c[1].Why = "subnet file not written yet"
	}
	dp := check{Name: "dataplane"}
	if s.backend != nil && !s.backend.Status().LastPass.IsZero() {
		dp.OK = true
	} else {
		dp.Why = "data plane not programmed yet"
	}
	return append(c, dp)
}

// health: ready, the lease is not about to expire, etcd answered within the
// renew margin, and the data plane was reconciled recently.
func (s *state) health(now time.Time, renewMargin, resync time.Duration) []check {
	checks := s.readiness()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.lease != nil && !s.lease.Reservation && s.holder != nil {
		last := s.holder.LastRenewal()
		c := check{Name: "etcd", OK: now.Sub(last) <= renewMargin}
		if !c.OK {
			c.Why = fmt.Sprintf("no successful renewal since %s", last.UTC().Format(time.RFC3339))
		}
		checks = append(checks, c)
		if !s.lease.Expiration.IsZero() {
			left := s.lease.Expiration.Sub(now)
			c := check{Name: "lease_ttl", OK: left > 0}
			if !c.OK {
				c.Why = "lease expired"
			}
			checks = append(checks, c)
		}
	}
	if s.backend != nil {
		last := s.backend.Status().LastPass
		if !last.IsZero() {
			c := check{Name: "reconcile", OK: now.Sub(last) <= 3*resync}
			if !c.OK {
				c.Why = fmt.Sprintf("last full reconcile pass at %s", last.UTC().Format(time.RFC3339))
			}
			checks = append(checks, c)
		}
	}
	return checks
}

func writeChecks(w http.ResponseWriter, checks []check) {
	status := http.StatusOK
	var failed []string
	for _, c := range checks {
		if !c.OK {
			status = http.StatusServiceUnavailable
			failed = append(failed, c.Name+": "+c.Why)
		}
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(struct {
		OK     bool    `json:"ok"`
		Failed string  `json:"failed,omitempty"`
		Checks []check `json:"checks"`
	}{status == http.StatusOK, strings.Join(failed, "; "), checks})
}

// listenStatus listens on the unix socket at path. The socket is root-only
// (0600) and its directory 0700 when created here.
func listenStatus(path string) (net.Listener, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("status socket: %w", err)
	}
	// A socket left by a crashed agent is stale; a live agent still answers.
	if c, err := net.DialTimeout("unix", path, 200*time.Millisecond); err == nil {
		c.Close()
		return nil, fmt.Errorf("status socket %s: another agent is serving it", path)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("status socket: %w", err)
	}
	// Created 0600 from the start: no window in which others may connect.
	old := syscall.Umask(0o177)
	l, err := net.Listen("unix", path)
	syscall.Umask(old)
	if err != nil {
		return nil, fmt.Errorf("status socket: %w", err)
	}
	return l, nil
}

// serveStatus answers on l until ctx is done, then removes the socket.
func (a *Agent) serveStatus(ctx context.Context, l net.Listener, mux *http.ServeMux) {
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		<-ctx.Done()
		srv.Close()
	}()
	if err := srv.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
		a.log.Error("status socket stopped", "err", err)
	}
}

func (a *Agent) statusMux() *http.ServeMux {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		writeChecks(w, a.state.readiness())
	})
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		writeChecks(w, a.state.health(time.Now(), a.opts.RenewMargin, a.opts.ResyncInterval))
	})
	mux.HandleFunc("GET /v1/status", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		enc.Encode(a.state.report(r.Context(), a.opts))
	})
	return mux
}
