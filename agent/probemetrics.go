package agent

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/netagent/netagent/probe"
)

// Metric names of the peer probes.
const (
	MetricProbeRTT          = "netagent_probe_rtt_seconds"
	MetricProbeFailures     = "netagent_probe_failures_total"
	MetricPeersUnreachable  = "netagent_peers_unreachable"
	MetricTxCsumOffload     = "netagent_vxlan_tx_checksum_offload"
	MetricCsumOffloadEvents = "netagent_vxlan_tx_checksum_offload_changes_total"
)

// Values of the family label of the probe metrics.
const (
	familyIPv4 = "ipv4"
	familyIPv6 = "ipv6"
)

// probeRTTBuckets are the upper bounds, in seconds, of the probe RTT
// histogram: from 100 µs (hosts on one switch) to 1 s (the probe timeout).
var probeRTTBuckets = []float64{0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1}

// probeMetrics count the prober's results since the agent started, over
// every pipeline.
type probeMetrics struct {
	rtt      *prometheus.HistogramVec
	failures *prometheus.CounterVec
	offload  *prometheus.CounterVec
}

func newProbeMetrics() *probeMetrics {
	m := &probeMetrics{
		rtt: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    MetricProbeRTT,
			Help:    "Round trip time of the small overlay probe to a peer, for each round that found the peer reachable, by address family (ipv4, ipv6).",
			Buckets: probeRTTBuckets,
		}, []string{"family"}),
		failures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: MetricProbeFailures,
			Help: "Probe rounds that found a peer unreachable, by address family (ipv4, ipv6) and likely cause.",
		}, []string{"family", "cause"}),
		offload: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: MetricCsumOffloadEvents,
			Help: "Changes the prober made to the vxlan device's TX checksum offload, by kind (trial-off, kept-off, restored).",
		}, []string{"kind"}),
	}
	for _, f := range []string{familyIPv4, familyIPv6} {
		m.rtt.WithLabelValues(f)
		for _, c := range probe.Causes {
			m.failures.WithLabelValues(f, string(c))
		}
	}
	for _, k := range []string{probe.OffloadTrialOff, probe.OffloadKeptOff, probe.OffloadRestored} {
		m.offload.WithLabelValues(k)
	}
	return m
}

func (m *probeMetrics) collectors() []prometheus.Collector {
	return []prometheus.Collector{m.rtt, m.failures, m.offload}
}

// probeResult takes a round's result (probe.Config.OnResult).
func (s *state) probeResult(r probe.Result) {
	f := familyIPv4
	if r.Peer.Subnet.Addr().Is6() {
		f = familyIPv6
	}
	if r.Reachable {
		s.probeM.rtt.WithLabelValues(f).Observe(r.RTT.Seconds())
		return
	}
	s.probeM.failures.WithLabelValues(f, string(r.Cause)).Inc()
}

// offloadChanged takes a change the prober made to the offload setting
// (probe.Config.OnOffload); the prober has logged it.
func (s *state) offloadChanged(ev probe.OffloadEvent) {
	s.probeM.offload.WithLabelValues(ev.Kind).Inc()
	s.update(func(s *state) {
		if s.lastOffload == nil {
			s.lastOffload = map[string]probe.OffloadEvent{}
		}
		s.lastOffload[ev.Device] = ev
	})
}
