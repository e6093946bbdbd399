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
	// CheckKubeAPI is the etcd check's counterpart in kube mode: the API
	// server answers; in readiness, the Node informer has listed the
	// Nodes.
	CheckKubeAPI   = "kube-apiserver"
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
// been programmed at least once under the current pipeline; in kube mode,
// the Node informer has listed the Nodes (peers known).
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
	c = append(c, dp)
	if s.kube != nil {
		k := Check{Name: CheckKubeAPI, OK: s.kube.HasSynced()}
		if !k.OK {
			k.Why = "the Node informer has not listed the Nodes yet"
		}
		c = append(c, k)
	}
	return c
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
	etcd, what := Check{Name: CheckEtcd, OK: true}, "etcd"
	if s.kube != nil {
		etcd.Name, what = CheckKubeAPI, "the API server"
	}
	if last := s.lastEtcdContact(); last.IsZero() {
		etcd.OK, etcd.Why = false, what+" never answered"
	} else if now.Sub(last) > renewMargin {
		etcd.OK = false
		etcd.Why = fmt.Sprintf("%s has not answered for %s (renew margin %s)", what, now.Sub(last).Round(time.Second), renewMargin)
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

// probeStore asks the cluster store whether it answers (ask) at every
// probe interval until ctx is done, and records the answer: the health
// Check of the store is about the store answering, not about this host's
// lease renewals alone (which happen rarely). ask is etcdAsk or the API
// server's /readyz.
func (a *Agent) probeStore(ctx context.Context, ask func(ctx context.Context) error) {
	every := etcdProbeInterval(a.opts.RenewMargin)
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		rctx, cancel := context.WithTimeout(ctx, every)
		err := ask(rctx)
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

// etcdAsk reads key (the network config) with a linearizable read.
func etcdAsk(cli *clientv3.Client, key string) func(ctx context.Context) error {
	return func(ctx context.Context) error {
		_, err := cli.Get(ctx, key, clientv3.WithCountOnly())
		return err
	}
}
