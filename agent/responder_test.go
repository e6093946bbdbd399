package agent

import (
	"net/netip"
	"testing"

	"github.com/netagent/netagent/backend"
	"github.com/netagent/netagent/lease"
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
