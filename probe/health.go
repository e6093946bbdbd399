package probe

import (
	"net/netip"
	"time"
)

// Cause is why the overlay path to a peer is not working; empty when it
// works. The values are stable: they are shown by `netagent status` and
// used as metric labels.
type Cause string

const (
	// CauseNone: both probes were answered through the overlay.
	CauseNone Cause = ""
	// CauseNotProgrammed: the peer's route or entries are not in the
	// kernel (Config.Programmed said so, or sending found no route);
	// nothing is sent through the overlay then.
	CauseNotProgrammed Cause = "not-programmed"
	// CauseUnderlayUnreachable: neither the overlay probe nor the probe
	// to the peer's public IP was answered: the host is down or cut off.
	CauseUnderlayUnreachable Cause = "underlay-unreachable"
	// CauseLargePacketsLost: the small probe was answered, the full-MTU
	// probe (DF set) was not, or could not be sent: an MTU black hole.
	CauseLargePacketsLost Cause = "large-packets-lost"
	// CauseNoAnswer: the peer answers on its public IP but not through the
	// overlay: encapsulated traffic is lost (a firewall dropping the VXLAN
	// port, a checksum offload bug, a stale fdb entry, no responder).
	CauseNoAnswer Cause = "no-answer"
	// CauseNoResponder: the peer's kernel answered a probe with ICMP port
	// unreachable, through the overlay or on its public IP: the host is
	// up, its agent's responder does not listen (not running, or failed
	// to bind: see that host's status).
	CauseNoResponder Cause = "no-responder"
)

// Causes lists every non-empty Cause, for metric label sets.
var Causes = []Cause{CauseNotProgrammed, CauseUnderlayUnreachable, CauseLargePacketsLost, CauseNoAnswer, CauseNoResponder}

// Peer is a remote host to probe.
type Peer struct {
	// Subnet is the peer's lease; it identifies the peer.
	Subnet netip.Prefix
	// Overlay is the address probed through the overlay: OverlayAddr of
	// the peer's lease, where its responder listens.
	Overlay netip.Addr
	// PublicIP is the peer's underlay address, probed directly when the
	// overlay probe fails, to tell a dead host from a dead overlay.
	PublicIP netip.Addr
}

// OverlayAddr is the address a host's responder listens on inside its
// lease: for vxlan the lease's network address, which is the /32 of
// flannel.<VNI> (10.5.17.0 for 10.5.17.0/24), or for an IPv6 lease the
// /128 of flannel-v6.<VNI> (fc00:5:0:11:: for fc00:5:0:11::/64); for
// host-gw, which has no device of its own, the first host address, which
// the bridge plugin gives cni0 (10.5.17.1): probes to it succeed once cni0
// exists.
func OverlayAddr(backendType string, subnet netip.Prefix) netip.Addr {
	a := subnet.Masked().Addr()
	if backendType == "host-gw" {
		return a.Next()
	}
	return a
}

// PeerHealth is what the prober knows about one peer.
type PeerHealth struct {
	Peer
	// Probed is false until the first round of probes has finished.
	Probed bool
	// Reachable is true when the last round's small and full-MTU probes
	// were both answered through the overlay.
	Reachable bool
	// Cause is why the peer is not reachable (CauseNone when it is).
	Cause Cause
	// OffloadRuledOut is set with CauseNoAnswer when TX checksum offload
	// of the overlay device is off, or was turned off without the path
	// recovering: it is not the problem.
	OffloadRuledOut bool
	// Detail adds what the last round saw (a send error), for people.
	Detail string
	// RTT is the small probe's last round trip time; SmoothedRTT an
	// exponentially weighted mean of it (weight 1/8, as TCP's SRTT);
	// LargeRTT the full-MTU probe's last round trip time. Zero until
	// measured.
	RTT, SmoothedRTT, LargeRTT time.Duration
	// LastProbe is when the last round finished; LastSuccess when one last
	// found the peer reachable (zero if never).
	LastProbe, LastSuccess time.Time
	// ConsecutiveFailures counts the rounds since the last success.
	ConsecutiveFailures int
}

// Result is one finished round of probes to one peer, as handed to
// Config.OnResult.
type Result struct {
	Peer Peer
	Time time.Time
	// Reachable, Cause and OffloadRuledOut are as in PeerHealth.
	Reachable       bool
	Cause           Cause
	OffloadRuledOut bool
	// RTT and LargeRTT are the round trip times measured in this round
	// (zero for a probe that was not answered or not sent).
	RTT, LargeRTT time.Duration
	// Sent is the number of datagrams this round sent.
	Sent int
}

// Status is a snapshot of the prober.
type Status struct {
	// Peers is sorted by subnet.
	Peers []PeerHealth
	// Interval is the period at which each peer is probed: the
	// configured one, or longer when the rate bound needs it.
	Interval time.Duration
	// Rate is the bound on datagrams sent per second.
	Rate float64
	// Sent counts datagrams sent since New; Answered the replies matched
	// to a probe; Refused the probes a peer's kernel answered with ICMP
	// port unreachable.
	Sent, Answered, Refused uint64
	// Offload is the overlay device's TX checksum offload, nil when the
	// prober was given no OffloadSwitch.
	Offload *OffloadStatus
}

// Unreachable returns the peers that were probed and found unreachable.
// `netagent status --check` fails when it is not empty.
func (s Status) Unreachable() []PeerHealth {
	var out []PeerHealth
	for _, p := range s.Peers {
		if p.Probed && !p.Reachable {
			out = append(out, p)
		}
	}
	return out
}
