package backend

import (
	"net/netip"
	"time"
)

// Peer modes reported in PeerStatus.Mode.
const (
	// ModeVXLAN: route, neighbour and fdb entry through the VXLAN device.
	ModeVXLAN = "vxlan"
	// ModeDirect: a route via the peer's public IP on the external
	// interface (vxlan DirectRouting).
	ModeDirect = "direct"
	// ModeHostGW: a route via the peer's public IP (host-gw backend).
	ModeHostGW = "host-gw"
)

// Status is a snapshot of a backend's data plane, for status reports.
type Status struct {
	// Type is the backend type ("vxlan", "host-gw").
	Type string
	// Device is the overlay device ("flannel.1"); empty for host-gw.
	Device string
	// MTU is the MTU containers get.
	MTU int
	// VtepMAC is the VXLAN device's MAC; empty for host-gw.
	VtepMAC string
	// Peers holds one entry per remote lease of this backend type, sorted
	// by subnet.
	Peers []PeerStatus
	// LastPass is when the last full reconcile pass finished (zero before
	// the first).
	LastPass time.Time
	Counters Counters
}

// PeerStatus is one remote lease as the backend sees it.
type PeerStatus struct {
	Subnet   netip.Prefix
	PublicIP netip.Addr
	// VtepMAC is the peer's VTEP MAC (vxlan only).
	VtepMAC string
	// Mode is ModeVXLAN, ModeDirect or ModeHostGW.
	Mode string
	// Programmed is true when the kernel held the peer's entries as
	// desired after the last pass or event that touched them.
	Programmed bool
	// LastError is why the peer is not programmed (unreachable peer,
	// netlink error); empty when it is.
	LastError string
}

// Counters count what the reconcile loop has done since it started.
type Counters struct {
	// Passes is the number of full reconcile passes.
	Passes uint64
	// Repairs counts entries found missing or wrong in the kernel after
	// they had been programmed, or found there without being wanted, by
	// kind: "route", "neigh", "fdb", "device", "address".
	Repairs map[string]uint64
	// NetlinkErrors counts failed netlink requests.
	NetlinkErrors uint64
}
