package agent

import (
	"fmt"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/netagent/netagent/probe"
)

// CheckProbe is the health check of the probe responders: it fails while
// a responder of this host is not serving (it could not bind its port,
// or its socket failed), naming the error. Without --probe, or before
// the probes start, there is no such check.
const CheckProbe = "probe"

// Metric names of the probe responders.
const (
	MetricResponderServing  = "netagent_probe_responder_serving"
	MetricResponderFailures = "netagent_probe_responder_failures_total"
	MetricResponderRequests = "netagent_probe_responder_datagrams_total"
)

// Values of the result label of MetricResponderRequests.
const (
	responderAnswered = "answered"
	responderDropped  = "dropped"
	responderRefused  = "refused"
)

// ResponderReport is the probe responder of one address family.
type ResponderReport struct {
	Family string `json:"family"`
	// Serving is true while its sockets are bound and answering; Error
	// is why not. Since is when that last changed; Failures counts the
	// attempts that failed (each retried after a capped backoff).
	Serving  bool       `json:"serving"`
	Error    string     `json:"error,omitempty"`
	Since    *time.Time `json:"since,omitempty"`
	Failures int        `json:"failures"`
	// Answered counts probes answered; Dropped datagrams from the
	// cluster's hosts that were not probes or went over the reply rate;
	// Refused datagrams from sources that are not the cluster's hosts
	// (not a lease's public IP or inside a lease's subnet), never
	// answered.
	Answered uint64 `json:"answered"`
	Dropped  uint64 `json:"dropped"`
	Refused  uint64 `json:"refused"`
}

// setResponders replaces the responders of the state (the probes were
// restarted); the counters of the previous ones are kept in the totals.
// s.mu is held.
func (s *state) setResponders(rs []familyResponder) {
	for _, r := range s.responders {
		st := r.k.State()
		s.respRetired.Replies += st.Replies
		s.respRetired.Dropped += st.Dropped
		s.respRetired.Refused += st.Refused
		s.respRetired.Failures += st.Failures
	}
	s.responders = rs
}

// responderTotals sums the responders' counters since the agent started;
// s.mu is held.
func (s *state) responderTotals() probe.ResponderState {
	t := s.respRetired
	for _, r := range s.responders {
		st := r.k.State()
		t.Replies += st.Replies
		t.Dropped += st.Dropped
		t.Refused += st.Refused
		t.Failures += st.Failures
	}
	return t
}

// probeCheck is the health check "probe"; ok is false when there are no
// responders (no check). s.mu is held.
func (s *state) probeCheck() (c Check, ok bool) {
	if len(s.responders) == 0 {
		return Check{}, false
	}
	c = Check{Name: CheckProbe, OK: true}
	var why []string
	for _, r := range s.responders {
		st := r.k.State()
		if st.Serving || st.Err == "" {
			// Serving, or opening for the first time.
			continue
		}
		c.OK = false
		why = append(why, fmt.Sprintf("%s responder not serving since %s (%d attempts): %s",
			r.family, st.Since.UTC().Format(time.RFC3339), st.Failures, st.Err))
	}
	c.Why = strings.Join(why, "; ")
	return c, true
}

// responderReports is the responders' section of the probe report; s.mu
// is held.
func (s *state) responderReports() []ResponderReport {
	var out []ResponderReport
	for _, r := range s.responders {
		st := r.k.State()
		out = append(out, ResponderReport{Family: r.family, Serving: st.Serving, Error: st.Err, Since: timePtr(st.Since),
			Failures: st.Failures, Answered: st.Replies, Dropped: st.Dropped, Refused: st.Refused})
	}
	return out
}

// responderCollector exports the responders' state at each scrape.
type responderCollector struct {
	s                           *state
	serving, failures, requests *prometheus.Desc
}

func newResponderCollector(s *state) *responderCollector {
	return &responderCollector{
		s: s,
		serving: prometheus.NewDesc(MetricResponderServing,
			"1 while the probe responder of the address family (ipv4, ipv6) serves, 0 while it cannot (absent when not probing).", []string{"family"}, nil),
		failures: prometheus.NewDesc(MetricResponderFailures,
			"Attempts to open or serve the probe responder that failed (each retried after a capped backoff).", nil, nil),
		requests: prometheus.NewDesc(MetricResponderRequests,
			"Datagrams the probe responder received, by result: answered, dropped (from a cluster host, not a probe or over the reply rate), refused (from a source that is not a cluster host).", []string{"result"}, nil),
	}
}

// Describe implements prometheus.Collector.
func (c *responderCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.serving
	ch <- c.failures
	ch <- c.requests
}

// Collect implements prometheus.Collector.
func (c *responderCollector) Collect(ch chan<- prometheus.Metric) {
	s := c.s
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, r := range s.responders {
		v := 0.0
		if r.k.State().Serving {
			v = 1
		}
		ch <- prometheus.MustNewConstMetric(c.serving, prometheus.GaugeValue, v, strings.ToLower(r.family))
	}
	t := s.responderTotals()
	ch <- prometheus.MustNewConstMetric(c.failures, prometheus.CounterValue, float64(t.Failures))
	for res, n := range map[string]uint64{responderAnswered: t.Replies, responderDropped: t.Dropped, responderRefused: t.Refused} {
		ch <- prometheus.MustNewConstMetric(c.requests, prometheus.CounterValue, float64(n), res)
	}
}
