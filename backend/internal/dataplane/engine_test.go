package dataplane

import (
	"net"
	"net/netip"
	"slices"
	"testing"

	"github.com/netagent/netagent/backend"
)

// TestMACUsers: the peers in vxlan mode with one MAC, as setPeer keeps
// them: the latest holds the fdb entry; when it goes, another of them takes
// it over; the MAC is forgotten with the last of them. The sequences cover
// one prefix per MAC (the usual case, held inline) and several.
func TestMACUsers(t *testing.T) {
	mac := net.HardwareAddr{0x0a, 0, 0, 0, 0, 1}
	other := net.HardwareAddr{0x0a, 0, 0, 0, 0, 2}
	pfx := func(i int) netip.Prefix { return netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 5, byte(i), 0}), 24) }
	peerAt := func(i int, m net.HardwareAddr) *peer {
		return &peer{key: pfx(i).String(), subnet: pfx(i), mac: m, mode: backend.ModeVXLAN, reachable: true}
	}
	type step struct {
		subnet int
		mac    net.HardwareAddr // nil: the peer is removed
		// owner is the subnet holding mac's fdb entry after the step (0:
		// mac unknown), users every subnet that has it.
		owner int
		users []int
	}
	for _, tc := range []struct {
		name  string
		steps []step
	}{{
		name: "one prefix",
		steps: []step{
			{subnet: 1, mac: mac, owner: 1, users: []int{1}},
			{subnet: 1, mac: mac, owner: 1, users: []int{1}},
			{subnet: 1, owner: 0},
		},
	}, {
		name: "one prefix changes its MAC",
		steps: []step{
			{subnet: 1, mac: mac, owner: 1, users: []int{1}},
			{subnet: 1, mac: other, owner: 0},
		},
	}, {
		name: "several prefixes, the owner goes first",
		steps: []step{
			{subnet: 1, mac: mac, owner: 1, users: []int{1}},
			{subnet: 2, mac: mac, owner: 2, users: []int{1, 2}},
			{subnet: 3, mac: mac, owner: 3, users: []int{1, 2, 3}},
			{subnet: 3, owner: 1, users: []int{1, 2}},
			{subnet: 1, owner: 2, users: []int{2}},
			{subnet: 2, owner: 0},
		},
	}, {
		name: "several prefixes, another goes",
		steps: []step{
			{subnet: 1, mac: mac, owner: 1, users: []int{1}},
			{subnet: 2, mac: mac, owner: 2, users: []int{1, 2}},
			{subnet: 1, owner: 2, users: []int{2}},
			{subnet: 1, mac: mac, owner: 1, users: []int{1, 2}},
			{subnet: 2, mac: other, owner: 1, users: []int{1}},
		},
	}} {
		t.Run(tc.name, func(t *testing.T) {
			e := New(Config{Device: &DeviceSpec{Name: "flannel.1"}})
			for i, st := range tc.steps {
				var p *peer
				if st.mac != nil {
					p = peerAt(st.subnet, st.mac)
				}
				e.setPeer(pfx(st.subnet), p)
				owner := e.fdbOwner([6]byte(mac))
				if st.owner == 0 {
					if owner != nil {
						t.Fatalf("step %d: %s still owned by %s", i, mac, owner.subnet)
					}
					if others := e.macOthers[[6]byte(mac)]; others != nil {
						t.Fatalf("step %d: %s has no owner but other users %v", i, mac, others)
					}
					continue
				}
				if owner == nil || owner.subnet != pfx(st.owner) || e.peers[owner.subnet] != owner {
					t.Fatalf("step %d: fdb owner of %s is %v, want the peer of %s", i, mac, owner, pfx(st.owner))
				}
				got := append([]netip.Prefix{owner.subnet}, e.macOthers[[6]byte(mac)]...)
				want := make([]netip.Prefix, 0, len(st.users))
				for _, s := range st.users {
					want = append(want, pfx(s))
				}
				slices.SortFunc(got, netip.Prefix.Compare)
				if !slices.Equal(got, want) {
					t.Fatalf("step %d: users of %s are %v, want %v", i, mac, got, want)
				}
			}
		})
	}
}
