package agent

import (
	"context"
	"fmt"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// Names of the health and readiness checks, as /healthz and /readyz report
// them.
const (
	CheckLease     = "lease"
	CheckFiles     = "files"
	CheckDataplane = "dataplane"
	CheckEtcd      = "etcd"
	CheckReconcile = "reconcile"
	// CheckProbe: see responder.go.
)

// Check is one named health or readiness check, as /healthz, /readyz and
// the Report give it.
type Check struct {
	Name string `json:"name"`
	OK   bool   `json:"ok"`
	Why  string `json:"why,omitempty"`
}

// readiness: a lease is held, the files are written and the data plane has
// been programmed at least once under the current pipeline.
func (s *state) readiness() []Check {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.readinessLocked()
}

func (s *state) readinessLocked() []Check {
	c := []Check{{Name: CheckLease, OK: s.lease != nil}, {Name: CheckFiles, OK: !s.filesAt.IsZero()}}
	if !c[0].OK {
		c[0].Why = "no lease held yet"
	}
	if !c[1].OK {
		c[1].Why = "subnet file not written yet"
	}
	dp := Check{Name: CheckDataplane}
	if s.backend != nil && !s.backend.Status().LastPass.IsZero() {
		dp.OK = true
	} else {
		dp.Why = "data plane not programmed yet"
	}
	return append(c, dp)
}

// health: ready, the lease is not about to expire (more than half the renew
// margin left: a renewal is due when the margin starts), etcd answered
// within the renew margin, the data plane had a full reconcile pass
// within three resync intervals, and every probe responder serves.
func (s *state) health(now time.Time, renewMargin, resync time.Duration) []Check {
	s.mu.Lock()
	defer s.mu.Unlock()
	checks := s.readinessLocked()
	if l := s.currentLease(); l != nil && !l.Reservation && !l.Expiration.IsZero() {
		if left := l.Expiration.Sub(now); left <= renewMargin/2 {
			checks[0].OK = false
			checks[0].Why = fmt.Sprintf("lease %s expires in %s and was not renewed", l.Key(), left.Round(time.Second))
			if left <= 0 {
				checks[0].Why = fmt.Sprintf("lease %s expired at %s", l.Key(), l.Expiration.UTC().Format(time.RFC3339))
			}
		}
	}
	etcd := Check{Name: CheckEtcd, OK: true}
	if last := s.lastEtcdContact(); last.IsZero() {
		etcd.OK, etcd.Why = false, "etcd never answered"
	} else if now.Sub(last) > renewMargin {
		etcd.OK = false
		etcd.Why = fmt.Sprintf("etcd has not answered for %s (renew margin %s)", now.Sub(last).Round(time.Second), renewMargin)
	}
	if !etcd.OK && s.etcdErr != "" {
		etcd.Why += ": " + s.etcdErr
	}
	checks = append(checks, etcd)
	if s.backend != nil {
		if last := s.backend.Status().LastPass; !last.IsZero() {
			c := Check{Name: CheckReconcile, OK: now.Sub(last) <= 3*resync}
			if !c.OK {
				c.Why = fmt.Sprintf("last full reconcile pass at %s", last.UTC().Format(time.RFC3339))
			}
			checks = append(checks, c)
		}
	}
	if c, ok := s.probeCheck(); ok {
		checks = append(checks, c)
	}
	return checks
}

// etcdProbeInterval is how often the agent asks etcd whether it answers:
// often enough to notice within the renew margin.
func etcdProbeInterval(renewMargin time.Duration) time.Duration {
	return min(max(renewMargin/4, 500*time.Millisecond), 30*time.Second)
}

// probeEtcd reads key (the network config) with a linearizable read at
// every probe interval until ctx is done, and records whether etcd
// answered: the health Check "etcd" is about the cluster store answering,
// not about this host's lease renewals alone (which happen rarely).
func (a *Agent) probeEtcd(ctx context.Context, cli *clientv3.Client, key string) {
	every := etcdProbeInterval(a.opts.RenewMargin)
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		rctx, cancel := context.WithTimeout(ctx, every)
		_, err := cli.Get(rctx, key, clientv3.WithCountOnly())
		cancel()
		if ctx.Err() != nil {
			return
		}
		a.state.etcdResult(time.Now(), err)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
