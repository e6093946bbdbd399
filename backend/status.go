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
	// ModeWireGuard: a peer of the WireGuard device, reached through the
	// one route of the overlay network (wireguard backend).
	ModeWireGuard = "wireguard"
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
	// DeviceV6 and VtepMACV6 are the same for the IPv6 overlay
	// ("flannel-v6.1"); empty for host-gw and when IPv6 is not enabled.
	// Device and VtepMAC are empty when IPv4 is not enabled.
	DeviceV6  string
	VtepMACV6 string
	// Peers holds one entry per remote lease of this backend type and
	// address family, refused keys aside (see Refused); a dual-stack
	// peer appears twice: its IPv4 subnet with its PublicIP, its IPv6
	// subnet with its PublicIPv6. Sorted by subnet, IPv4 first.
	Peers []PeerStatus
	// Refused lists the lease keys of this backend type that are not
	// programmed because they conflict with another key or have a form
	// the config does not allow (docs/compatibility.md §3.8), sorted by
	// key. A dual-stack key may appear once per family.
	Refused []RefusedLease
	// LastPass is when the last full reconcile pass finished (zero before
	// the first).
	LastPass time.Time
	Counters Counters
	// WireGuard describes the WireGuard devices, IPv4's first (wireguard
	// backend only).
	WireGuard []WireGuardDevice
}

// WireGuardDevice is one WireGuard device of the wireguard backend.
type WireGuardDevice struct {
	Device string
	// Impl is "kernel" or "userspace"; ImplReason says why it was chosen.
	Impl       string
	ImplReason string
	// PublicKey is the device's public key (base64); the private key is
	// never reported.
	PublicKey  string
	ListenPort int
}

// WireGuardPeer is what a WireGuard device reports of one peer.
type WireGuardPeer struct {
	PublicKey string
	// Endpoint is the peer's current UDP endpoint ("192.0.2.1:51820").
	Endpoint string
	// LatestHandshake is zero until a handshake has completed.
	LatestHandshake time.Time
	RxBytes         int64
	TxBytes         int64
}

// PeerStatus is one remote lease as the backend sees it.
type PeerStatus struct {
	// Key is the peer's lease key, relative to <prefix>/subnets/.
	Key      string
	Subnet   netip.Prefix
	PublicIP netip.Addr
	// VtepMAC is the peer's VTEP MAC (vxlan only).
	VtepMAC string
	// Mode is ModeVXLAN, ModeDirect, ModeHostGW or ModeWireGuard.
	Mode string
	// Programmed is true when the kernel held the peer's entries as
	// desired after the last pass or event that touched them.
	Programmed bool
	// LastError is why the peer is not programmed (unreachable peer,
	// netlink error); empty when it is.
	LastError string
	// ForeignRoute describes the route, not the agent's, that holds the
	// peer's prefix in the kernel and that the agent leaves in place
	// (`10.5.2.0/24 proto boot via 192.168.1.9 dev index 3`); empty when
	// there is none.
	ForeignRoute string
	// WireGuard is the device's view of the peer (wireguard backend; nil
	// when the device does not hold it).
	WireGuard *WireGuardPeer
}

// Reasons a lease key is refused, as RefusedLease.Reason and the
// netagent_leases_refused metric name them (docs/compatibility.md §3.8).
const (
	// RefusedSubnet: a key created earlier holds the same subnet.
	RefusedSubnet = "subnet"
	// RefusedIdentity: a key created earlier holds the same backend
	// identity (vxlan: the VtepMAC).
	RefusedIdentity = "identity"
	// RefusedKeyForm: the key names a subnet of an address family the
	// config does not enable (a dual-stack key with IPv6 off).
	RefusedKeyForm = "key-form"
	// RefusedBackendType: the key is of another backend type than the
	// network's (on a wireguard network, a peer that does not encrypt
	// would get traffic in clear, or none).
	RefusedBackendType = "backend-type"
)

// RefusedReasons lists every reason, in a stable order.
var RefusedReasons = [...]string{RefusedSubnet, RefusedIdentity, RefusedKeyForm, RefusedBackendType}

// RefusedLease is a lease key the data plane does not program.
type RefusedLease struct {
	// Key is the refused key, relative to <prefix>/subnets/.
	Key string
	// Subnet is the subnet it names in the engine's family (invalid for
	// a refused form without one); PublicIP its public address.
	Subnet   netip.Prefix
	PublicIP netip.Addr
	// Reason is one of the Refused* constants; Detail says more (the
	// identity both keys claim, the families the config enables).
	Reason string
	Detail string
	// Winner is the key that holds the subnet or identity instead; empty
	// when no key holds the subnet of a refused form, and for a refused
	// backend type.
	Winner string
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
	// ForeignRoutes counts the conflicts found with routes the agent does
	// not own over a peer's prefix (each left in place and reported once).
	ForeignRoutes uint64
	// EventLatency is the time from the reconcile loop taking a lease
	// event that adds or changes a peer to the kernel holding that peer's
	// entries (retries included).
	EventLatency Histogram
}

// LatencyBuckets are the upper bounds, in seconds, of a Histogram's buckets.
var LatencyBuckets = [...]float64{0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10}

// Histogram counts durations in LatencyBuckets, as a Prometheus histogram.
type Histogram struct {
	// Buckets[i] is the number of observations of at most
	// LatencyBuckets[i] seconds (cumulative).
	Buckets [len(LatencyBuckets)]uint64
	// Count is the number of observations and Sum their total in seconds.
	Count uint64
	Sum   float64
}

// Observe adds one duration.
func (h *Histogram) Observe(d time.Duration) {
	v := d.Seconds()
	for i, le := range LatencyBuckets {
		if v <= le {
			h.Buckets[i]++
		}
	}
	h.Count++
	h.Sum += v
}

// Add adds every observation of o.
func (h *Histogram) Add(o Histogram) {
	for i := range h.Buckets {
		h.Buckets[i] += o.Buckets[i]
	}
	h.Count += o.Count
	h.Sum += o.Sum
}
