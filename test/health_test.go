package test

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/netagent/netagent/agent"
	"github.com/netagent/netagent/internal/await"
)

// TestHealthEtcdOutage: /healthz answers 200 while all is well, 503 naming
// the "etcd" check once etcd has been stopped for longer than the renew
// margin (killed, as a crash), and 200 again after etcd is back; /readyz stays 200 meanwhile
// (the files and the data plane are still in place).
func TestHealthEtcdOutage(t *testing.T) {
	t.Parallel()
	c := newCluster(t, clusterOptions{Hosts: 1, Config: vxlanConfig,
		AgentArgs: append([]string{"--subnet-lease-ttl=6s", "--subnet-lease-renew-margin=3s"}, healthzArgs...)})
	c.startAll()
	h := c.hosts()[0]
	await.Eventually(t, 60*time.Second, "healthy", func() error {
		code, hz, err := getHealthz(t, h)
		if err != nil {
			return err
		}
		if code != http.StatusOK || !hz.OK {
			return fmt.Errorf("/healthz %d %+v", code, hz)
		}
		return nil
	})

	if err := c.lab.KillEtcd(); err != nil {
		t.Fatal(err)
	}
	await.Eventually(t, 60*time.Second, "unhealthy naming etcd", func() error {
		code, hz, err := getHealthz(t, h)
		if err != nil {
			return err
		}
		if code != http.StatusServiceUnavailable || hz.OK {
			return fmt.Errorf("/healthz %d %+v", code, hz)
		}
		for _, ch := range hz.Checks {
			if ch.Name == agent.CheckEtcd && !ch.OK && strings.Contains(hz.Failed, agent.CheckEtcd+": ") {
				return nil
			}
		}
		return fmt.Errorf("/healthz 503 without a failed etcd check: %+v", hz)
	})
	// Unhealthy only once the renew margin has passed since etcd last
	// answered: the agent's own record of that answer, read after the
	// 503, is at least the margin old.
	var r *agent.Report
	await.Eventually(t, time.Minute, "h1's status", func() (err error) {
		r, err = c.statusReport(h)
		return err
	})
	if r.Etcd.LastContact == nil {
		t.Errorf("status after the 503 has no last etcd contact: %+v", r.Etcd)
	} else if d := time.Since(*r.Etcd.LastContact); d < 3*time.Second {
		t.Errorf("unhealthy %v after etcd last answered: before the 3s renew margin", d)
	}
	if code, body, err := httpGet(t, h, "/readyz"); err != nil || code != http.StatusOK {
		t.Errorf("/readyz during the etcd outage: %d %s %v; want 200 (files and data plane in place)", code, body, err)
	}

	if err := c.lab.StartEtcd(c.ctx); err != nil {
		t.Fatal(err)
	}
	await.Eventually(t, 30*time.Second, "healthy again", func() error {
		code, hz, err := getHealthz(t, h)
		if err != nil {
			return err
		}
		if code != http.StatusOK || !hz.OK {
			return fmt.Errorf("/healthz %d %+v", code, hz)
		}
		return nil
	})
}

// TestMetrics: /metrics parses as the Prometheus text format, and the
// numbers move when a peer joins: peers, reconcile passes and the
// lease-event-to-kernel histogram.
func TestMetrics(t *testing.T) {
	t.Parallel()
	c := newCluster(t, clusterOptions{Hosts: 2, Config: vxlanConfig,
		AgentArgs: append([]string{"--resync-interval=1s"}, healthzArgs...)})
	h1, h2 := c.hosts()[0], c.hosts()[1]
	c.startAgent(h1)
	c.awaitSubnetFile(h1)
	var before map[string]float64
	names := []string{agent.MetricPeers, agent.MetricReconcilePasses, agent.MetricEventLatency,
		agent.MetricRenewals, agent.MetricRenewalFailures, agent.MetricWatchRestarts, agent.MetricLeaseTTL,
		agent.MetricRepairs, agent.MetricNetlinkErrors, agent.MetricReady, agent.MetricBuildInfo}
	await.Eventually(t, 60*time.Second, "h1 ready in /metrics", func() error {
		fams, err := scrape(t, h1)
		if err != nil {
			return err
		}
		before = map[string]float64{}
		for _, n := range names {
			if before[n] = metricSum(fams, n); before[n] < 0 {
				return fmt.Errorf("%s missing", n)
			}
		}
		if before[agent.MetricReady] != 1 {
			return fmt.Errorf("%s = %v", agent.MetricReady, before[agent.MetricReady])
		}
		if ttl := before[agent.MetricLeaseTTL]; ttl <= 0 || ttl > (24*time.Hour).Seconds() {
			return fmt.Errorf("%s = %v", agent.MetricLeaseTTL, ttl)
		}
		return nil
	})
	if before[agent.MetricPeers] != 0 {
		t.Fatalf("%s = %v before h2 joined", agent.MetricPeers, before[agent.MetricPeers])
	}

	c.startAgent(h2)
	c.awaitSubnetFile(h2)
	await.Eventually(t, 60*time.Second, "metrics moved after h2 joined", func() error {
		fams, err := scrape(t, h1)
		if err != nil {
			return err
		}
		if v := metricSum(fams, agent.MetricPeers); v != 1 {
			return fmt.Errorf("%s = %v, want 1", agent.MetricPeers, v)
		}
		if v := metricSum(fams, agent.MetricPeersUnprogrammed); v != 0 {
			return fmt.Errorf("%s = %v, want 0", agent.MetricPeersUnprogrammed, v)
		}
		if v := metricSum(fams, agent.MetricEventLatency); v <= before[agent.MetricEventLatency] {
			return fmt.Errorf("%s count %v, was %v", agent.MetricEventLatency, v, before[agent.MetricEventLatency])
		}
		h := fams[agent.MetricEventLatency].GetMetric()[0].GetHistogram()
		if h.GetSampleSum() <= 0 || h.GetSampleSum() > 10 {
			return fmt.Errorf("%s sum %v s: want above 0 and below 10", agent.MetricEventLatency, h.GetSampleSum())
		}
		if v := metricSum(fams, agent.MetricReconcilePasses); v <= before[agent.MetricReconcilePasses] {
			return fmt.Errorf("%s = %v, was %v", agent.MetricReconcilePasses, v, before[agent.MetricReconcilePasses])
		}
		return nil
	})
}
