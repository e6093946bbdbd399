package test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os/exec"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/netagent/netagent/agent"
	"github.com/netagent/netagent/internal/lab"
)

// healthzPort is the --healthz-port of the agents of the operability
// tests; each host namespace has its own loopback.
const healthzPort = 9102

// healthzArgs serve /healthz, /readyz and /metrics on the host's loopback.
var healthzArgs = []string{"--healthz-ip=127.0.0.1", fmt.Sprintf("--healthz-port=%d", healthzPort)}

// httpGet gets path from the agent's healthz port, from inside h's
// namespace.
func httpGet(t *testing.T, h *lab.Host, path string) (int, []byte, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, fmt.Sprintf("http://127.0.0.1:%d%s", healthzPort, path), nil)
	if err != nil {
		return 0, nil, err
	}
	resp, err := lab.HTTPClientInNS(h.NS).Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return resp.StatusCode, body, err
}

// healthz is /healthz's answer.
type healthz struct {
	OK     bool          `json:"ok"`
	Failed string        `json:"failed"`
	Checks []agent.Check `json:"checks"`
}

func getHealthz(t *testing.T, h *lab.Host) (int, healthz, error) {
	t.Helper()
	code, body, err := httpGet(t, h, "/healthz")
	if err != nil {
		return 0, healthz{}, err
	}
	var hz healthz
	if err := json.Unmarshal(body, &hz); err != nil {
		return code, hz, fmt.Errorf("/healthz body %q: %w", body, err)
	}
	return code, hz, nil
}

// scrape gets /metrics from h's agent and parses it as the Prometheus text
// format.
func scrape(t *testing.T, h *lab.Host) (map[string]*dto.MetricFamily, error) {
	t.Helper()
	code, body, err := httpGet(t, h, "/metrics")
	if err != nil {
		return nil, err
	}
	if code != http.StatusOK {
		return nil, fmt.Errorf("/metrics answered %d", code)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	return p.TextToMetricFamilies(strings.NewReader(string(body)))
}

// metricSum is the sum of the values of a counter or gauge family over all
// its label sets, or the sample count of a histogram; -1 when absent.
func metricSum(fams map[string]*dto.MetricFamily, name string) float64 {
	f, ok := fams[name]
	if !ok {
		return -1
	}
	var sum float64
	for _, m := range f.GetMetric() {
		sum += metricValue(m)
	}
	return sum
}

// metric scrapes h's agent and returns the sum of the family name
// (metricSum); a failed scrape or an absent family ends the test.
func metric(t *testing.T, h *lab.Host, name string) float64 {
	t.Helper()
	fams, err := scrape(t, h)
	if err != nil {
		t.Fatalf("%s /metrics: %v", h.Name, err)
	}
	v := metricSum(fams, name)
	if v < 0 {
		t.Fatalf("%s /metrics has no %s", h.Name, name)
	}
	return v
}

// metricValue is a counter's or gauge's value, or a histogram's count.
func metricValue(m *dto.Metric) float64 {
	switch {
	case m.Counter != nil:
		return m.GetCounter().GetValue()
	case m.Gauge != nil:
		return m.GetGauge().GetValue()
	case m.Histogram != nil:
		return float64(m.GetHistogram().GetSampleCount())
	}
	return 0
}

// statusReport runs `netagent status --json` in h's namespace.
func (c *cluster) statusReport(h *lab.Host) (*agent.Report, error) {
	out, err := c.exec(h.NS, binaries(c.t)["./cmd/netagent"], "status", "--json", "--status-socket="+statusSocket(h))
	if err != nil {
		return nil, err
	}
	var r agent.Report
	if err := json.Unmarshal(out, &r); err != nil {
		return nil, fmt.Errorf("status --json: %w: %s", err, out)
	}
	return &r, nil
}

// runSplit runs argv in ns, keeping stdout and stderr apart; err is the
// exit error, if any.
func (c *cluster) runSplit(ns string, argv ...string) (stdout, stderr []byte, err error) {
	ctx, cancel := context.WithTimeout(c.ctx, 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", ns}, argv...)...)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err = cmd.Run()
	return out.Bytes(), errOut.Bytes(), err
}

// runSplitText runs argv in ns and returns stdout then stderr as one text.
func (c *cluster) runSplitText(ns string, argv ...string) (string, error) {
	out, errOut, err := c.runSplit(ns, argv...)
	return string(out) + string(errOut), err
}
