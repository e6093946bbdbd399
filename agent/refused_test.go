package agent

import (
	"context"
	"net/netip"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/netagent/netagent/backend"
)

type refusingBackend struct {
	backend.Backend
	st backend.Status
}

func (b refusingBackend) Status() backend.Status { return b.st }

// TestRefusedLeasesReported: the keys the data plane refuses are in the
// status report with reason and winner, and counted by reason in
// netagent_leases_refused, every reason present from 0.
func TestRefusedLeasesReported(t *testing.T) {
	s := &state{backend: refusingBackend{st: backend.Status{
		Peers: []backend.PeerStatus{{Key: "10.5.2.0-24", Subnet: netip.MustParsePrefix("10.5.2.0/24"), Mode: backend.ModeVXLAN, Programmed: true}},
		Refused: []backend.RefusedLease{
			{Key: "10.5.2.0-24&fd00:5::-64", Subnet: netip.MustParsePrefix("10.5.2.0/24"), PublicIP: netip.MustParseAddr("192.168.77.9"),
				Reason: backend.RefusedKeyForm, Winner: "10.5.2.0-24", Detail: "IPv6 is not enabled"},
			{Key: "10.5.3.0-24", Subnet: netip.MustParsePrefix("10.5.3.0/24"), Reason: backend.RefusedIdentity, Winner: "10.5.2.0-24"},
			{Key: "10.5.4.0-24", Subnet: netip.MustParsePrefix("10.5.4.0/24"), Reason: backend.RefusedIdentity, Winner: "10.5.2.0-24"},
		},
	}}}
	r := s.report(context.Background(), &Options{})
	if len(r.Peers) != 1 || r.Peers[0].Key != "10.5.2.0-24" {
		t.Errorf("peers = %+v, want the one with its key", r.Peers)
	}
	want := RefusedReport{Key: "10.5.2.0-24&fd00:5::-64", Subnet: "10.5.2.0/24", PublicIP: "192.168.77.9",
		Reason: "key-form", Winner: "10.5.2.0-24", Detail: "IPv6 is not enabled"}
	if len(r.Refused) != 3 || r.Refused[0] != want {
		t.Errorf("refused = %+v, want 3, the first %+v", r.Refused, want)
	}

	reg := prometheus.NewRegistry()
	reg.MustRegister(newCollector(s, "test"))
	fams, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, f := range fams {
		if f.GetName() != MetricLeasesRefused {
			continue
		}
		for _, m := range f.GetMetric() {
			got[m.GetLabel()[0].GetValue()] = m.GetGauge().GetValue()
		}
	}
	for reason, n := range map[string]float64{"subnet": 0, "identity": 2, "key-form": 1} {
		if v, ok := got[reason]; !ok || v != n {
			t.Errorf("%s{reason=%q} = %v (present %v), want %v", MetricLeasesRefused, reason, v, ok, n)
		}
	}
}
