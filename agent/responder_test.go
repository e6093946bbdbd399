package agent

import (
	"context"
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/netagent/netagent/backend"
	"github.com/netagent/netagent/internal/await"
	"github.com/netagent/netagent/lease"
	"github.com/netagent/netagent/probe"
)

// TestResponderSources: the responders answer the peers' public IPs and
// addresses inside their subnets, this host's subnet and addresses, and
// nobody else.
func TestResponderSources(t *testing.T) {
	st := backend.Status{Peers: []backend.PeerStatus{
		{Subnet: netip.MustParsePrefix("10.5.2.0/24"), PublicIP: netip.MustParseAddr("192.168.77.2")},
		{Subnet: netip.MustParsePrefix("fc00:5:0:2::/64"), PublicIP: netip.MustParseAddr("fd00::2")},
	}}
	src := responderSources(st, lease.Lease{Subnet: v4Lease, IPv6Subnet: v6Lease}, dualExt)
	for addr, want := range map[string]bool{
		"192.168.77.2": true, "10.5.2.0": true, "10.5.2.17": true, "fd00::2": true, "fc00:5:0:2::": true,
		"192.168.77.1": true, "10.5.1.0": true, "10.5.1.9": true, "fd00::1": true, "fc00:5:0:1::": true,
		"192.168.77.3": false, "10.5.3.0": false, "203.0.113.9": false, "fd00::3": false, "fc00:5:0:3::": false,
	} {
		if got := src.Allows(netip.MustParseAddr(addr)); got != want {
			t.Errorf("Allows(%s) = %v, want %v", addr, got, want)
		}
	}
	next := responderSources(backend.Status{Peers: st.Peers[:1]}, lease.Lease{Subnet: v4Lease, IPv6Subnet: v6Lease}, dualExt)
	if next.Equal(src) || next.Allows(netip.MustParseAddr("fd00::2")) {
		t.Error("a peer gone from the backend's status is still answered")
	}
}

// TestProbeCheck: the health check "probe" is absent without responders,
// fails naming the error while one is not serving, and the probe report
// says responder-failed.
func TestProbeCheck(t *testing.T) {
	s := newState(time.Now())
	if c, ok := s.probeCheck(); ok {
		t.Fatalf("check %+v without responders", c)
	}
	// No address: every attempt fails at once, as a bind would.
	k := probe.NewResponderKeeper(probe.ResponderConfig{}, time.Hour, time.Hour)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { k.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	s.update(func(s *state) { s.setResponders([]familyResponder{{family: "IPv4", k: k}}) })
	await.Eventually(t, time.Minute, "the keeper's first attempt failed", func() error {
		if st := k.State(); st.Failures != 1 {
			return fmt.Errorf("state %+v", st)
		}
		return nil
	})
	s.mu.Lock()
	c, ok := s.probeCheck()
	pr := s.probeReport(&Options{}, nil)
	s.mu.Unlock()
	if !ok || c.OK || c.Name != CheckProbe || !strings.Contains(c.Why, "IPv4 responder not serving") || !strings.Contains(c.Why, "responder has no address") {
		t.Errorf("check %+v, want a failing probe check naming the error", c)
	}
	if !strings.HasPrefix(pr.State, "responder-failed: ") || len(pr.Responders) != 1 || pr.Responders[0].Serving || pr.Responders[0].Failures != 1 {
		t.Errorf("probe report %+v", pr)
	}
	checks := s.health(time.Now(), time.Minute, time.Minute)
	if last := checks[len(checks)-1]; last.Name != CheckProbe || last.OK {
		t.Errorf("health checks %+v, want a failing probe check last", checks)
	}
}
