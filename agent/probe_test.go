package agent

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/netagent/netagent/backend"
	"github.com/netagent/netagent/iface"
	"github.com/netagent/netagent/internal/await"
	"github.com/netagent/netagent/internal/nstest"
	"github.com/netagent/netagent/lease"
	"github.com/netagent/netagent/probe"
)

var (
	v4Lease   = netip.MustParsePrefix("10.5.1.0/24")
	v6Lease   = netip.MustParsePrefix("fc00:5:0:1::/64")
	v4Ext     = iface.External{Name: "eth0", Addr: netip.MustParseAddr("192.168.77.1"), PublicIP: netip.MustParseAddr("192.168.77.1")}
	dualExt   = iface.External{Name: "eth0", Addr: v4Ext.Addr, PublicIP: v4Ext.PublicIP, AddrV6: netip.MustParseAddr("fd00::1"), PublicIPv6: netip.MustParseAddr("fd00::1")}
	v6OnlyExt = iface.External{Name: "eth0", AddrV6: dualExt.AddrV6, PublicIPv6: dualExt.PublicIPv6}
)

func addrs(ss ...string) []netip.Addr {
	var out []netip.Addr
	for _, s := range ss {
		out = append(out, netip.MustParseAddr(s))
	}
	return out
}

func TestNewProbeTargets(t *testing.T) {
	natExt := v4Ext
	natExt.PublicIP = netip.MustParseAddr("203.0.113.7")
	type want struct {
		v6          bool
		own, public string
		respond     []netip.Addr
	}
	cases := []struct {
		name    string
		beType  string
		lease   lease.Lease
		ext     iface.External
		want    []want
		wantErr string
	}{
		{"vxlan IPv4", "vxlan", lease.Lease{Subnet: v4Lease}, v4Ext,
			[]want{{false, "10.5.1.0", "192.168.77.1", addrs("10.5.1.0", "192.168.77.1")}}, ""},
		{"vxlan IPv4 behind NAT", "vxlan", lease.Lease{Subnet: v4Lease}, natExt,
			[]want{{false, "10.5.1.0", "192.168.77.1", addrs("10.5.1.0", "192.168.77.1", "203.0.113.7")}}, ""},
		{"vxlan IPv6 only: flannel-v6's /128", "vxlan", lease.Lease{IPv6Subnet: v6Lease}, v6OnlyExt,
			[]want{{true, "fc00:5:0:1::", "fd00::1", addrs("fc00:5:0:1::", "fd00::1")}}, ""},
		{"vxlan dual stack", "vxlan", lease.Lease{Subnet: v4Lease, IPv6Subnet: v6Lease}, dualExt, []want{
			{false, "10.5.1.0", "192.168.77.1", addrs("10.5.1.0", "192.168.77.1")},
			{true, "fc00:5:0:1::", "fd00::1", addrs("fc00:5:0:1::", "fd00::1")},
		}, ""},
		{"host-gw dual stack", "host-gw", lease.Lease{Subnet: v4Lease, IPv6Subnet: v6Lease}, dualExt, []want{
			{false, "192.168.77.1", "192.168.77.1", addrs("192.168.77.1")},
			{true, "fd00::1", "fd00::1", addrs("fd00::1")},
		}, ""},
		{"IPv6 lease, no IPv6 address: IPv4 only", "vxlan", lease.Lease{Subnet: v4Lease, IPv6Subnet: v6Lease}, v4Ext,
			[]want{{false, "10.5.1.0", "192.168.77.1", addrs("10.5.1.0", "192.168.77.1")}}, "no IPv6 address"},
		{"unknown backend", "udp", lease.Lease{Subnet: v4Lease, IPv6Subnet: v6Lease}, dualExt, nil, `backend "udp": no probe`},
		{"no subnet", "vxlan", lease.Lease{}, dualExt, nil, "has no subnet"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ts, err := newProbeTargets(tc.beType, tc.lease, tc.ext)
			if (err == nil) != (tc.wantErr == "") || err != nil && !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("error %v, want one saying %q", err, tc.wantErr)
			}
			var got []want
			for _, pt := range ts {
				got = append(got, want{pt.v6, pt.own.String(), pt.public.String(), pt.respond})
			}
			if !slices.EqualFunc(got, tc.want, func(a, b want) bool {
				return a.v6 == b.v6 && a.own == b.own && a.public == b.public && slices.Equal(a.respond, b.respond)
			}) {
				t.Errorf("targets %+v, want %+v", got, tc.want)
			}
		})
	}
}

// dualStatus is a backend status with two dual-stack peers (each listed
// once per family, as the dataplane group reports them) and a lease that
// is broken: an IPv6 subnet with an IPv4 public IP.
func dualStatus() backend.Status {
	ps := func(sn, pub string, programmed bool) backend.PeerStatus {
		return backend.PeerStatus{Subnet: netip.MustParsePrefix(sn), PublicIP: netip.MustParseAddr(pub), Programmed: programmed}
	}
	return backend.Status{Device: "flannel.1", DeviceV6: "flannel-v6.1", Peers: []backend.PeerStatus{
		ps("10.5.2.0/24", "192.168.77.2", true),
		ps("10.5.3.0/24", "192.168.77.3", false),
		ps("fc00:5:0:2::/64", "fd00::2", true),
		ps("fc00:5:0:3::/64", "fd00::3", true),
		ps("fc00:5:0:9::/64", "192.168.77.9", true),
	}}
}

func TestProbePeers(t *testing.T) {
	st := dualStatus()
	for _, tc := range []struct {
		beType     string
		v6         bool
		want       []string // subnet overlay public
		programmed []string
	}{
		{"vxlan", false, []string{"10.5.2.0/24 10.5.2.0 192.168.77.2", "10.5.3.0/24 10.5.3.0 192.168.77.3"}, []string{"10.5.2.0/24"}},
		{"vxlan", true, []string{"fc00:5:0:2::/64 fc00:5:0:2:: fd00::2", "fc00:5:0:3::/64 fc00:5:0:3:: fd00::3"},
			[]string{"fc00:5:0:2::/64", "fc00:5:0:3::/64"}},
		{"host-gw", true, []string{"fc00:5:0:2::/64 fd00::2 fd00::2", "fc00:5:0:3::/64 fd00::3 fd00::3"},
			[]string{"fc00:5:0:2::/64", "fc00:5:0:3::/64"}},
	} {
		ts, err := newProbeTargets(tc.beType, lease.Lease{Subnet: v4Lease, IPv6Subnet: v6Lease}, dualExt)
		if err != nil || len(ts) != 2 {
			t.Fatalf("targets %+v, %v", ts, err)
		}
		pt := ts[0]
		if tc.v6 {
			pt = ts[1]
		}
		var programmed programmedSet
		peers := programmed.peersOf(st, []*familyProbe{{t: pt}})[0]
		var got, gotProg []string
		for _, p := range peers {
			got = append(got, fmt.Sprintf("%s %s %s", p.Subnet, p.Overlay, p.PublicIP))
			if programmed.has(p) {
				gotProg = append(gotProg, p.Subnet.String())
			}
		}
		if !slices.Equal(got, tc.want) || !slices.Equal(gotProg, tc.programmed) {
			t.Errorf("%s %s: peers %q programmed %q; want %q and %q", tc.beType, pt.family(), got, gotProg, tc.want, tc.programmed)
		}
		if dev, want := pt.device(st), map[bool]string{false: "flannel.1", true: "flannel-v6.1"}[tc.v6]; dev != want {
			t.Errorf("%s device %q, want %q", pt.family(), dev, want)
		}
	}
}

// TestProbeReportBothFamilies: the state holds the IPv4 prober, which
// includes the IPv6 one; the report gives every peer of both families its
// probe result. The probers run in a namespace of their own and send
// nothing: the backend says no peer is programmed.
func TestProbeReportBothFamilies(t *testing.T) {
	ns := nstest.NewNS(t, "agp")
	st := dualStatus()
	pts, err := newProbeTargets("vxlan", lease.Lease{Subnet: v4Lease, IPv6Subnet: v6Lease}, dualExt)
	if err != nil {
		t.Fatal(err)
	}
	var ps []*probe.Prober
	for _, pt := range pts {
		p, err := probe.New(probe.Config{Netns: ns.Netns, LocalOverlay: pt.own, LocalPublic: pt.public, MTU: 1430,
			Interval: 50 * time.Millisecond, Rate: 100, Programmed: func(probe.Peer) bool { return false }})
		if err != nil {
			t.Fatal(err)
		}
		p.SetPeers(pt.probePeers(st))
		ps = append(ps, p)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for _, p := range ps {
		wg.Go(func() {
			if err := p.Run(ctx); err != nil {
				t.Errorf("run: %v", err)
			}
		})
	}
	defer func() { cancel(); wg.Wait() }()
	s := newState(time.Now())
	s.probers = proberSet(ps)
	o := DefaultOptions()
	var peers []PeerReport
	await.Eventually(t, 5*time.Second, "peer reports", func() error {
		peers = peers[:0]
		for _, p := range st.Peers {
			peers = append(peers, PeerReport{Subnet: p.Subnet.String()})
		}
		s.mu.Lock()
		pr := s.probeReport(o, peers)
		s.mu.Unlock()
		if pr.Unreachable != 4 || !pr.Enabled || pr.Rate != 200 {
			return fmt.Errorf("probe report %+v; want 4 peers unreachable, the rates of both probers", pr)
		}
		return nil
	})
	for _, p := range peers {
		v6 := strings.Contains(p.Subnet, ":")
		switch {
		case p.Subnet == "fc00:5:0:9::/64":
			if p.Probe != nil {
				t.Errorf("%s (an IPv4 public IP) probed: %+v", p.Subnet, p.Probe)
			}
		case p.Probe == nil || !p.Probe.Probed || p.Probe.Cause != string(probe.CauseNotProgrammed) ||
			strings.Contains(p.Probe.Overlay, ":") != v6:
			t.Errorf("%s: probe %+v; want probed, not programmed, at an overlay address of its family", p.Subnet, p.Probe)
		}
	}
}
