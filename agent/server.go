package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// DefaultStatusSocket is where the agent answers `netagent status` and the
// CNI plugin's STATUS Check.
const DefaultStatusSocket = "/run/netagent/netagent.sock"

// writeChecks answers 200 when every Check passed, else 503 with the
// failing checks named in "failed".
func writeChecks(w http.ResponseWriter, checks []Check) {
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
		Checks []Check `json:"checks"`
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
		holder := "another agent"
		if pid, err := peerPID(&net.UnixAddr{Name: path, Net: "unix"}); err == nil {
			holder = fmt.Sprintf("another agent (process %d)", pid)
		}
		return nil, fmt.Errorf("status socket %s: %s is serving it; give this one its own --status-socket", path, holder)
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

// listenHealthz listens on --healthz-ip:--healthz-port; nil when the port
// is 0.
func listenHealthz(o *Options) (net.Listener, error) {
	if o.HealthzPort == 0 {
		return nil, nil
	}
	addr := netip.AddrPortFrom(o.HealthzIP, uint16(o.HealthzPort)).String()
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("healthz: %w", err)
	}
	return l, nil
}

// startServers starts the status socket and the healthz listener the
// options ask for; they serve until ctx is done. Listening errors are
// returned at once, so that a port in use stops the agent at start.
func (a *Agent) startServers(ctx context.Context) error {
	if a.opts.StatusSocket != "" {
		l, err := listenStatus(a.opts.StatusSocket)
		if err != nil {
			return err
		}
		go a.serveHTTP(ctx, "status socket", l, a.statusMux())
	}
	l, err := listenHealthz(a.opts)
	if err != nil {
		return err
	}
	if l != nil {
		a.log.Info("serving /healthz, /readyz and /metrics", "addr", l.Addr().String())
		go a.serveHTTP(ctx, "healthz", l, a.healthzMux())
	}
	return nil
}

// serveHTTP answers on l until ctx is done (a unix socket is removed then).
func (a *Agent) serveHTTP(ctx context.Context, what string, l net.Listener, mux *http.ServeMux) {
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		<-ctx.Done()
		srv.Close()
	}()
	if err := srv.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
		a.log.Error(what+" stopped", "err", err)
	}
}

// healthzMux serves /healthz, /readyz and /metrics.
func (a *Agent) healthzMux() *http.ServeMux {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		writeChecks(w, a.state.readiness())
	})
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		writeChecks(w, a.state.health(time.Now(), a.opts.RenewMargin, a.opts.ResyncInterval))
	})
	mux.Handle("GET /metrics", promhttp.HandlerFor(newMetricsRegistry(a.state, a.opts), promhttp.HandlerOpts{}))
	return mux
}

// statusMux is healthzMux plus /v1/status, the Report.
func (a *Agent) statusMux() *http.ServeMux {
	mux := a.healthzMux()
	mux.HandleFunc("GET /v1/status", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		enc.Encode(a.state.report(r.Context(), a.opts))
	})
	return mux
}
