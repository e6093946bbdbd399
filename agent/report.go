package agent

import (
	"context"
	"fmt"
	"time"

	"github.com/netagent/netagent/probe"
	"github.com/netagent/netagent/subnet/kubestore"
)

// Report is the agent's status as `netagent status --json` prints it and
// GET /v1/status on the status socket returns it. Field names are stable:
// scripts may rely on them; new fields may be added.
type Report struct {
	// Running is always true in a Report from the agent; `netagent
	// status --json` prints an OfflineReport, with running false, when the
	// agent does not answer.
	Running       bool      `json:"running"`
	Version       string    `json:"version"`
	StartedAt     time.Time `json:"started_at"`
	UptimeSeconds int64     `json:"uptime_seconds"`
	// Etcd is the etcd store; in kube mode only its contact fields are
	// set (the API server's), Store says more.
	Etcd      EtcdReport       `json:"etcd"`
	Store     StoreReport      `json:"store"`
	Lease     *LeaseReport     `json:"lease"`
	Network   *NetworkReport   `json:"network"`
	Interface *InterfaceReport `json:"interface"`
	Backend   *BackendReport   `json:"backend"`
	Peers     []PeerReport     `json:"peers"`
	// Refused lists the other hosts' lease keys the data plane does not
	// program: they conflict with a key created earlier, or have a form
	// the config does not allow (docs/compatibility.md §3.8).
	Refused    []RefusedReport  `json:"refused"`
	Masquerade MasqueradeReport `json:"masquerade"`
	Probe      ProbeReport      `json:"probe"`
	// Ready is /readyz's verdict; Health lists /healthz's checks.
	Ready        bool          `json:"ready"`
	Health       []Check       `json:"health"`
	RecentErrors []RecentError `json:"recent_errors"`
}

// EtcdReport says where the agent's cluster store is.
type EtcdReport struct {
	Endpoints []string `json:"endpoints"`
	Prefix    string   `json:"prefix"`
	// Reachable is true when etcd answered within the renew margin;
	// LastContact is its last answer and Error the last failure since.
	Reachable   bool       `json:"reachable"`
	LastContact *time.Time `json:"last_contact,omitempty"`
	Error       string     `json:"error,omitempty"`
	LastRenewal *time.Time `json:"last_renewal,omitempty"`
}

// StoreReport is the cluster store the agent keeps its lease on.
type StoreReport struct {
	// Kind is "etcd" or "kubernetes" (kube mode).
	Kind string `json:"kind"`
	// Reachable is true when the store (etcd, the API server) answered
	// within the renew margin; LastContact is its last answer and Error
	// the last failure since.
	Reachable   bool       `json:"reachable"`
	LastContact *time.Time `json:"last_contact,omitempty"`
	Error       string     `json:"error,omitempty"`
	// KubeStoreReport is set in kube mode.
	*KubeStoreReport
}

// KubeStoreReport is the Kubernetes store (kubestore.Info).
type KubeStoreReport struct {
	APIServer        string `json:"api_server"`
	Node             string `json:"node"`
	AnnotationPrefix string `json:"annotation_prefix"`
	NetConfigPath    string `json:"net_config_path"`
	// Synced is true once the Node informer has listed the Nodes;
	// LastEvent is when it last delivered a Node.
	Synced    bool                   `json:"synced"`
	LastEvent *time.Time             `json:"last_event,omitempty"`
	Counters  kubestore.InfoCounters `json:"counters"`
}

// LeaseReport is this host's lease.
type LeaseReport struct {
	Subnet      string     `json:"subnet,omitempty"`
	IPv6Subnet  string     `json:"ipv6_subnet,omitempty"`
	Reservation bool       `json:"reservation"`
	Expiration  *time.Time `json:"expiration,omitempty"`
	TTLSeconds  int64      `json:"ttl_seconds,omitempty"`
	// Losses counts the leases lost and acquired again since the agent
	// started; Restores the times the key was found deleted or
	// overwritten while its etcd lease lived, and written back
	// (docs/compatibility.md §3.6).
	Losses   uint64 `json:"losses"`
	Restores uint64 `json:"restores"`
}

// NetworkReport is the network config in force.
type NetworkReport struct {
	Network       string `json:"network,omitempty"`
	SubnetLen     int    `json:"subnet_len,omitempty"`
	SubnetMin     string `json:"subnet_min,omitempty"`
	SubnetMax     string `json:"subnet_max,omitempty"`
	IPv6Network   string `json:"ipv6_network,omitempty"`
	IPv6SubnetLen int    `json:"ipv6_subnet_len,omitempty"`
	BackendType   string `json:"backend_type"`
}

// InterfaceReport is the external interface.
type InterfaceReport struct {
	Name       string `json:"name"`
	MTU        int    `json:"mtu"`
	Addr       string `json:"addr,omitempty"`
	PublicIP   string `json:"public_ip,omitempty"`
	AddrV6     string `json:"addr_v6,omitempty"`
	PublicIPv6 string `json:"public_ipv6,omitempty"`
}

// BackendReport is the data plane.
type BackendReport struct {
	Type          string            `json:"type"`
	Device        string            `json:"device,omitempty"`
	MTU           int               `json:"mtu"`
	VtepMAC       string            `json:"vtep_mac,omitempty"`
	DeviceV6      string            `json:"device_v6,omitempty"`
	VtepMACV6     string            `json:"vtep_mac_v6,omitempty"`
	LastPass      *time.Time        `json:"last_pass,omitempty"`
	Passes        uint64            `json:"passes"`
	Repairs       map[string]uint64 `json:"repairs"`
	NetlinkErrors uint64            `json:"netlink_errors"`
	// ForeignRoutes counts conflicts with routes the agent does not own
	// over a peer's prefix (each left in place).
	ForeignRoutes uint64 `json:"foreign_routes"`
	// WireGuard lists the WireGuard devices (wireguard backend).
	WireGuard []WireGuardReport `json:"wireguard,omitempty"`
}

// WireGuardReport is one WireGuard device: which implementation runs it
// and why, its public key (never the private one) and listen port.
type WireGuardReport struct {
	Device     string `json:"device"`
	Impl       string `json:"impl"`
	ImplReason string `json:"impl_reason"`
	PublicKey  string `json:"public_key"`
	ListenPort int    `json:"listen_port"`
}

// WireGuardPeerReport is what the WireGuard device reports of a peer.
type WireGuardPeerReport struct {
	PublicKey string `json:"public_key"`
	Endpoint  string `json:"endpoint,omitempty"`
	// LatestHandshake is absent until a handshake has completed.
	LatestHandshake *time.Time `json:"latest_handshake,omitempty"`
	RxBytes         int64      `json:"rx_bytes"`
	TxBytes         int64      `json:"tx_bytes"`
}

// RefusedReport is one lease key the data plane refuses.
type RefusedReport struct {
	// Key is the key relative to <prefix>/subnets/.
	Key      string `json:"key"`
	Subnet   string `json:"subnet,omitempty"`
	PublicIP string `json:"public_ip,omitempty"`
	// Reason is "subnet", "identity" or "key-form"; Winner the key that
	// holds the subnet or identity instead (empty when none does).
	Reason string `json:"reason"`
	Winner string `json:"winner,omitempty"`
	Detail string `json:"detail,omitempty"`
}

// PeerReport is one other host as the data plane sees it.
type PeerReport struct {
	// Key is the peer's lease key relative to <prefix>/subnets/.
	Key        string `json:"key,omitempty"`
	Subnet     string `json:"subnet"`
	PublicIP   string `json:"public_ip"`
	VtepMAC    string `json:"vtep_mac,omitempty"`
	Mode       string `json:"mode"`
	Programmed bool   `json:"programmed"`
	Error      string `json:"error,omitempty"`
	// ForeignRoute is the route, not the agent's, that holds the peer's
	// prefix and that the agent leaves to the administrator
	// (docs/compatibility.md §5.6).
	ForeignRoute string `json:"foreign_route,omitempty"`
	// Probe is what the last probe round found; nil when the peer is not
	// probed (probing off, IPv6).
	Probe *PeerProbeReport `json:"probe,omitempty"`
	// WireGuard is the WireGuard device's view of the peer (wireguard
	// backend).
	WireGuard *WireGuardPeerReport `json:"wireguard,omitempty"`
}

// PeerProbeReport is a peer's data-plane health as the probes see it.
type PeerProbeReport struct {
	// Overlay is the address probed through the overlay.
	Overlay string `json:"overlay"`
	// Probed is false until the first round finished; Reachable is true
	// when the last round's small and full-MTU probes were answered.
	Probed    bool `json:"probed"`
	Reachable bool `json:"reachable"`
	// Cause is why not (not-programmed, underlay-unreachable,
	// large-packets-lost, no-answer, no-responder); OffloadRuledOut is set with
	// no-answer when TX checksum offload is known not to be the reason.
	Cause           string `json:"cause,omitempty"`
	OffloadRuledOut bool   `json:"offload_ruled_out,omitempty"`
	Detail          string `json:"detail,omitempty"`
	// RTTMs is the small probe's last round trip, SmoothedRTTMs its
	// running mean, LargeRTTMs the full-MTU probe's, in milliseconds.
	RTTMs               float64    `json:"rtt_ms,omitempty"`
	SmoothedRTTMs       float64    `json:"smoothed_rtt_ms,omitempty"`
	LargeRTTMs          float64    `json:"large_rtt_ms,omitempty"`
	LastProbe           *time.Time `json:"last_probe,omitempty"`
	LastSuccess         *time.Time `json:"last_success,omitempty"`
	ConsecutiveFailures int        `json:"consecutive_failures"`
}

// ProbeReport is the peer prober.
type ProbeReport struct {
	// Enabled is true while the prober runs; State says why not.
	Enabled bool   `json:"enabled"`
	State   string `json:"state,omitempty"`
	// IntervalSeconds is the period each peer is probed at (longer than
	// configured with many peers); Rate the bound on probes a second.
	IntervalSeconds float64 `json:"interval_seconds,omitempty"`
	Rate            float64 `json:"rate,omitempty"`
	Port            int     `json:"port,omitempty"`
	// Sent and Answered count datagrams since the prober started.
	Sent     uint64 `json:"sent"`
	Answered uint64 `json:"answered"`
	// Unreachable is the number of probed peers found unreachable.
	Unreachable int `json:"unreachable"`
	// Offloads is the TX checksum offload of each vxlan device
	// (flannel.<VNI> first, then flannel-v6.<VNI>); none for host-gw.
	Offloads []OffloadReport `json:"offloads,omitempty"`
	// Refused counts probes that peers' kernels answered with ICMP port
	// unreachable (cause no-responder).
	Refused uint64 `json:"refused"`
	// Responders is this host's responder of each address family.
	Responders []ResponderReport `json:"responders,omitempty"`
}

// OffloadReport is a vxlan device's TX checksum offload.
type OffloadReport struct {
	Device string `json:"device"`
	// Mode is --vxlan-tx-csum-offload (auto, on, off); Auto is true when
	// the prober may try it off (auto mode with
	// --vxlan-auto-csum-offload).
	Mode       string `json:"mode"`
	Auto       bool   `json:"auto"`
	TxChecksum bool   `json:"tx_checksum"`
	// Trial is true while the prober has it off on trial; KeptOff when it
	// turned it off and kept it so because peers recovered (Since and
	// Peers say when and which).
	Trial   bool       `json:"trial"`
	KeptOff bool       `json:"kept_off"`
	Since   *time.Time `json:"since,omitempty"`
	Peers   []string   `json:"peers,omitempty"`
	Error   string     `json:"error,omitempty"`
	// LastChange is the last change the prober made.
	LastChange *OffloadChange `json:"last_change,omitempty"`
}

// OffloadChange is a change the prober made to a device's offload setting.
type OffloadChange struct {
	Time       time.Time `json:"time"`
	Kind       string    `json:"kind"`
	TxChecksum bool      `json:"tx_checksum"`
	Peers      []string  `json:"peers"`
	Error      string    `json:"error,omitempty"`
}

// MasqueradeReport says whether the masquerade rules are in place.
type MasqueradeReport struct {
	Enabled bool   `json:"enabled"`
	InPlace bool   `json:"in_place"`
	Reason  string `json:"reason,omitempty"`
}

func addrString[T interface {
	IsValid() bool
	String() string
}](a T) string {
	if !a.IsValid() {
		return ""
	}
	return a.String()
}

func timePtr(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	t = t.UTC()
	return &t
}

// report builds the Report from the current state.
func (s *state) report(ctx context.Context, o *Options) Report {
	now := time.Now()
	health := s.health(now, o.RenewMargin, o.ResyncInterval)
	ready := true
	for _, c := range s.readiness() {
		ready = ready && c.OK
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	r := Report{
		Running:       true,
		Ready:         ready,
		Health:        health,
		Version:       o.Version,
		StartedAt:     s.started.UTC(),
		UptimeSeconds: int64(now.Sub(s.started) / time.Second),
		Store:         StoreReport{Kind: StoreEtcd},
		Masquerade:    MasqueradeReport{Enabled: o.IPMasq},
		RecentErrors:  append([]RecentError{}, s.recentErrs...),
		Peers:         []PeerReport{},
		Refused:       []RefusedReport{},
	}
	if s.masq != nil && s.keeper != nil {
		ok, why, err := s.masq.Check(ctx, s.keeper.Rules())
		if err != nil {
			why = err.Error()
		}
		r.Masquerade.InPlace, r.Masquerade.Reason = ok, why
	}
	if s.holder != nil {
		r.Etcd.LastRenewal = timePtr(s.holder.LastRenewal())
	}
	if t := s.lastEtcdContact(); !t.IsZero() {
		r.Etcd.LastContact = timePtr(t)
		r.Etcd.Reachable = now.Sub(t) <= o.RenewMargin
	}
	r.Etcd.Error = s.etcdErr
	r.Store.Reachable, r.Store.LastContact, r.Store.Error = r.Etcd.Reachable, r.Etcd.LastContact, r.Etcd.Error
	if s.kube != nil {
		r.Store.Kind = StoreKubernetes
		i := s.kube.Info()
		r.Store.KubeStoreReport = &KubeStoreReport{APIServer: i.APIServer, Node: i.Node,
			AnnotationPrefix: i.AnnotationPrefix, NetConfigPath: i.NetConfigPath,
			Synced: i.Synced, LastEvent: timePtr(i.LastEvent), Counters: i.Counters}
	} else {
		r.Etcd.Endpoints, r.Etcd.Prefix = o.Etcd.Endpoints, o.Etcd.Prefix
	}
	if l := s.currentLease(); l != nil {
		lr := &LeaseReport{Subnet: addrString(l.Subnet), IPv6Subnet: addrString(l.IPv6Subnet), Reservation: l.Reservation}
		if !l.Expiration.IsZero() {
			lr.Expiration = timePtr(l.Expiration)
			lr.TTLSeconds = int64(l.Expiration.Sub(now) / time.Second)
		}
		if s.registry != nil {
			st := s.registry.Stats()
			lr.Losses, lr.Restores = st.LeaseLosses, st.LeaseRestores
		}
		r.Lease = lr
	}
	if c := s.config; c != nil {
		nr := &NetworkReport{BackendType: c.BackendType}
		if c.EnableIPv4 {
			nr.Network, nr.SubnetLen = c.Network.String(), c.SubnetLen
			nr.SubnetMin, nr.SubnetMax = c.SubnetMin.String(), c.SubnetMax.String()
		}
		if c.EnableIPv6 {
			nr.IPv6Network, nr.IPv6SubnetLen = c.IPv6Network.String(), c.IPv6SubnetLen
		}
		r.Network = nr
	}
	if s.ext.Name != "" {
		r.Interface = &InterfaceReport{Name: s.ext.Name, MTU: s.ext.MTU, Addr: addrString(s.ext.Addr),
			PublicIP: addrString(s.ext.PublicIP), AddrV6: addrString(s.ext.AddrV6), PublicIPv6: addrString(s.ext.PublicIPv6)}
	}
	if s.backend != nil {
		st := s.backend.Status()
		ct := s.counters()
		r.Backend = &BackendReport{Type: st.Type, Device: st.Device, MTU: st.MTU, VtepMAC: st.VtepMAC,
			DeviceV6: st.DeviceV6, VtepMACV6: st.VtepMACV6,
			LastPass: timePtr(st.LastPass), Passes: ct.Passes, Repairs: ct.Repairs,
			NetlinkErrors: ct.NetlinkErrors, ForeignRoutes: ct.ForeignRoutes}
		for _, d := range st.WireGuard {
			r.Backend.WireGuard = append(r.Backend.WireGuard, WireGuardReport(d))
		}
		for _, p := range st.Peers {
			pr := PeerReport{Key: p.Key, Subnet: p.Subnet.String(), PublicIP: addrString(p.PublicIP),
				VtepMAC: p.VtepMAC, Mode: p.Mode, Programmed: p.Programmed, Error: p.LastError,
				ForeignRoute: p.ForeignRoute}
			if w := p.WireGuard; w != nil {
				pr.WireGuard = &WireGuardPeerReport{PublicKey: w.PublicKey, Endpoint: w.Endpoint,
					LatestHandshake: timePtr(w.LatestHandshake), RxBytes: w.RxBytes, TxBytes: w.TxBytes}
			}
			r.Peers = append(r.Peers, pr)
		}
		for _, x := range st.Refused {
			r.Refused = append(r.Refused, RefusedReport{Key: x.Key, Subnet: addrString(x.Subnet),
				PublicIP: addrString(x.PublicIP), Reason: x.Reason, Winner: x.Winner, Detail: x.Detail})
		}
	}
	r.Probe = s.probeReport(o, r.Peers)
	return r
}

// CauseNoHandshake is the probe cause of a WireGuard peer whose host
// answers on the underlay but not through the overlay, and with which no
// handshake ever completed: its lease's key is
// not the one its host holds, or its port is blocked.
const CauseNoHandshake = "wireguard-no-handshake"

// noteNoHandshake makes the cause of an unreachable WireGuard peer
// CauseNoHandshake when no handshake with it has completed.
func noteNoHandshake(p *PeerReport) {
	if p.Probe == nil || p.Probe.Cause != string(probe.CauseNoAnswer) || p.WireGuard == nil || p.WireGuard.LatestHandshake != nil {
		return
	}
	p.Probe.Cause = CauseNoHandshake
	p.Probe.Detail = fmt.Sprintf("no WireGuard handshake with %s has completed: the public key in its lease is not its host's, or UDP %s is blocked", p.PublicIP, p.WireGuard.Endpoint)
}

// probeReport builds the probe section and fills each peer's Probe; s.mu
// is held.
func (s *state) probeReport(o *Options, peers []PeerReport) ProbeReport {
	pr := ProbeReport{State: s.probeNote}
	if len(s.probers) > 0 {
		st := s.probers.Status()
		pr.Enabled, pr.State = true, "probing"
		pr.IntervalSeconds, pr.Rate, pr.Port = st.Interval.Seconds(), st.Rate, o.ProbePort
		pr.Sent, pr.Answered, pr.Unreachable, pr.Refused = st.Sent, st.Answered, len(st.Unreachable()), st.Refused
		byNet := make(map[string]probe.PeerHealth, len(st.Peers))
		for _, h := range st.Peers {
			byNet[h.Subnet.String()] = h
		}
		for i := range peers {
			if h, ok := byNet[peers[i].Subnet]; ok {
				peers[i].Probe = peerProbeReport(h)
				noteNoHandshake(&peers[i])
			}
		}
	}
	pr.Responders = s.responderReports()
	if c, ok := s.probeCheck(); ok && !c.OK {
		// The host's own probing is incomplete: peers cannot probe it.
		pr.State = "responder-failed: " + c.Why
	}
	for _, off := range s.offloadStatuses() {
		or := OffloadReport{Device: off.Device, Mode: o.TxCsumOffload, Auto: off.Auto, TxChecksum: off.TxChecksum,
			Trial: off.Trial, KeptOff: off.KeptOff, Since: timePtr(off.Since), Error: off.Err}
		for _, p := range off.Peers {
			or.Peers = append(or.Peers, p.String())
		}
		if ev, ok := s.lastOffload[off.Device]; ok {
			c := &OffloadChange{Time: ev.Time.UTC(), Kind: ev.Kind, TxChecksum: ev.TxChecksum, Peers: []string{}}
			for _, p := range ev.Peers {
				c.Peers = append(c.Peers, p.String())
			}
			if ev.Err != nil {
				c.Error = ev.Err.Error()
			}
			or.LastChange = c
		}
		pr.Offloads = append(pr.Offloads, or)
	}
	return pr
}

func peerProbeReport(h probe.PeerHealth) *PeerProbeReport {
	ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
	return &PeerProbeReport{
		Overlay: addrString(h.Overlay), Probed: h.Probed, Reachable: h.Reachable,
		Cause: string(h.Cause), OffloadRuledOut: h.OffloadRuledOut, Detail: h.Detail,
		RTTMs: ms(h.RTT), SmoothedRTTMs: ms(h.SmoothedRTT), LargeRTTMs: ms(h.LargeRTT),
		LastProbe: timePtr(h.LastProbe), LastSuccess: timePtr(h.LastSuccess),
		ConsecutiveFailures: h.ConsecutiveFailures,
	}
}

// offloadStatuses is the TX checksum offload of each vxlan device: the
// explicit setting as kept, or as the probers see it; none when unknown.
// s.mu is held.
func (s *state) offloadStatuses() []probe.OffloadStatus {
	if len(s.offloadFixed) > 0 {
		return s.offloadFixed
	}
	var sts []probe.OffloadStatus
	for _, p := range s.probers {
		if off := p.Offload(); off != nil {
			sts = append(sts, *off)
		}
	}
	return sts
}
