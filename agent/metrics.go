package agent

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/netagent/netagent/backend"
	"github.com/netagent/netagent/subnet/kubestore"
)

// Metric names, as /metrics exports them. Counters only grow while the
// agent runs: a config change that restarts the pipeline keeps the totals.
const (
	MetricBuildInfo         = "netagent_build_info"
	MetricLeaseTTL          = "netagent_lease_ttl_seconds"
	MetricRenewals          = "netagent_lease_renewals_total"
	MetricRenewalFailures   = "netagent_lease_renewal_failures_total"
	MetricEtcdLastContact   = "netagent_etcd_last_contact_timestamp_seconds"
	MetricWatchRestarts     = "netagent_lease_watch_restarts_total"
	MetricLeaseLosses       = "netagent_lease_losses_total"
	MetricLeaseRestores     = "netagent_lease_restores_total"
	MetricPeers             = "netagent_peers"
	MetricPeersUnprogrammed = "netagent_peers_not_programmed"
	MetricReconcilePasses   = "netagent_reconcile_passes_total"
	MetricRepairs           = "netagent_repairs_total"
	MetricNetlinkErrors     = "netagent_netlink_errors_total"
	MetricForeignRoutes     = "netagent_peers_foreign_route"
	MetricEventLatency      = "netagent_lease_event_to_kernel_seconds"
	MetricReady             = "netagent_ready"
	MetricLeasesRefused     = "netagent_leases_refused"
	MetricWGHandshakeAge    = "netagent_wireguard_latest_handshake_age_seconds"
	MetricWGNoHandshake     = "netagent_wireguard_peers_without_handshake"
	MetricStoreInfo         = "netagent_store_info"
	MetricKubeSynced        = "netagent_kube_informer_synced"
	MetricKubeEvents        = "netagent_kube_node_events_total"
	MetricKubeLastEvent     = "netagent_kube_last_node_event_timestamp_seconds"
	MetricKubeLastContact   = "netagent_kube_apiserver_last_contact_timestamp_seconds"
)

// collector exports the agent's state at each scrape: there is no second
// copy of the numbers to keep in step with the state.
type collector struct {
	s       *state
	version string

	buildInfo, leaseTTL, renewals, renewalFailures, etcdContact, watchRestarts,
	leaseLosses, leaseRestores,
	peers, unprogrammed, foreign, passes, repairs, netlinkErrors, latency, ready,
	unreachable, csumOffload, refused, wgAge, wgNone,
	storeInfo, kubeSynced, kubeEvents, kubeLastEvent, kubeContact *prometheus.Desc
}

// newMetricsRegistry returns a registry with the agent's metrics and the Go
// runtime's and process's.
func newMetricsRegistry(s *state, o *Options) *prometheus.Registry {
	reg := prometheus.NewRegistry()
	if s.probeM != nil {
		reg.MustRegister(s.probeM.collectors()...)
	}
	reg.MustRegister(newCollector(s, o.Version), newResponderCollector(s),
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return reg
}

func newCollector(s *state, version string) *collector {
	d := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc(name, help, labels, nil)
	}
	return &collector{
		s:               s,
		version:         version,
		buildInfo:       d(MetricBuildInfo, "Always 1; the version is a label.", "version"),
		leaseTTL:        d(MetricLeaseTTL, "Seconds until this host's lease expires unless renewed (absent for a reservation or without a lease)."),
		renewals:        d(MetricRenewals, "Successful renewals of this host's lease."),
		renewalFailures: d(MetricRenewalFailures, "Failed attempts to renew this host's lease."),
		etcdContact:     d(MetricEtcdLastContact, "Unix time of the last answer from etcd."),
		watchRestarts:   d(MetricWatchRestarts, "Lease watches that broke and were listed and started again."),
		leaseLosses:     d(MetricLeaseLosses, "Times this host's lease was lost (etcd lease expired, a reservation or another agent with this host's public IP took the key) and acquired again."),
		leaseRestores:   d(MetricLeaseRestores, "Times this host's key was found deleted or overwritten while its etcd lease lived, and written back."),
		peers:           d(MetricPeers, "Other hosts' leases the data plane programs, by mode (vxlan, direct, host-gw).", "mode"),
		unprogrammed:    d(MetricPeersUnprogrammed, "Peers whose kernel entries are not as wanted."),
		foreign:         d(MetricForeignRoutes, "Peers whose prefix is held by a route the agent does not own, left in place."),
		passes:          d(MetricReconcilePasses, "Full reconcile passes of the data plane."),
		repairs:         d(MetricRepairs, "Kernel entries found missing, wrong or unwanted and fixed, by kind.", "kind"),
		netlinkErrors:   d(MetricNetlinkErrors, "Failed netlink requests of the data plane."),
		latency:         d(MetricEventLatency, "Time from the data plane taking a lease event that adds or changes a peer to the kernel holding the peer's entries."),
		ready:           d(MetricReady, "1 when the files are written and the data plane is programmed."),
		unreachable:     d(MetricPeersUnreachable, "Peers whose last probe round found them unreachable (absent when not probing)."),
		refused:         d(MetricLeasesRefused, "Other hosts' lease keys not programmed because they conflict with a key created earlier or have a form the config does not allow, by reason (subnet, identity, key-form).", "reason"),
		wgAge:           d(MetricWGHandshakeAge, "Seconds since the latest WireGuard handshake with a peer, by subnet (absent until one completed; wireguard backend).", "subnet"),
		wgNone:          d(MetricWGNoHandshake, "WireGuard peers with which no handshake has completed (wrong key, port blocked; wireguard backend)."),
		csumOffload:     d(MetricTxCsumOffload, "1 when TX checksum offload of the vxlan device is on, 0 when off (absent when unknown).", "device"),
		storeInfo:       d(MetricStoreInfo, "Always 1; the cluster store (etcd, kubernetes) is a label.", "kind"),
		kubeSynced:      d(MetricKubeSynced, "1 once the Node informer has listed the Nodes (kube mode)."),
		kubeEvents:      d(MetricKubeEvents, "Node events the informer delivered (kube mode)."),
		kubeLastEvent:   d(MetricKubeLastEvent, "Unix time of the informer's last Node event (kube mode; absent before the first)."),
		kubeContact:     d(MetricKubeLastContact, "Unix time of the last answer from the API server (kube mode)."),
	}
}

// Describe implements prometheus.Collector.
func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.buildInfo, c.leaseTTL, c.renewals, c.renewalFailures, c.etcdContact,
		c.watchRestarts, c.leaseLosses, c.leaseRestores, c.peers, c.unprogrammed, c.foreign, c.passes, c.repairs, c.netlinkErrors, c.latency, c.ready,
		c.unreachable, c.csumOffload, c.refused, c.wgAge, c.wgNone,
		c.storeInfo, c.kubeSynced, c.kubeEvents, c.kubeLastEvent, c.kubeContact} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (c *collector) Collect(ch chan<- prometheus.Metric) {
	now := time.Now()
	s := c.s
	s.mu.Lock()
	defer s.mu.Unlock()
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	counter := func(d *prometheus.Desc, v uint64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}
	gauge(c.buildInfo, 1, c.version)
	if l := s.currentLease(); l != nil && !l.Reservation && !l.Expiration.IsZero() {
		gauge(c.leaseTTL, l.Expiration.Sub(now).Seconds())
	}
	if s.registry != nil {
		st := s.registry.Stats()
		counter(c.renewals, st.Renewals)
		counter(c.renewalFailures, st.RenewalFailures)
		counter(c.watchRestarts, st.WatchRestarts)
		counter(c.leaseLosses, st.LeaseLosses)
		counter(c.leaseRestores, st.LeaseRestores)
	}
	contact := c.etcdContact
	if s.kube != nil {
		contact = c.kubeContact
		c.collectKube(ch, s.kube.Info())
	} else if s.storeKind != "" {
		gauge(c.storeInfo, 1, s.storeKind)
	}
	if t := s.lastEtcdContact(); !t.IsZero() {
		gauge(contact, float64(t.UnixNano())/1e9)
	}
	byMode := map[string]int{backend.ModeVXLAN: 0, backend.ModeDirect: 0, backend.ModeHostGW: 0}
	bad, foreign := 0, 0
	refused := make(map[string]int, len(backend.RefusedReasons))
	for _, r := range backend.RefusedReasons {
		refused[r] = 0 // every reason is exported, from 0
	}
	if s.backend != nil {
		st := s.backend.Status()
		for _, p := range st.Peers {
			byMode[p.Mode]++
			if !p.Programmed {
				bad++
			}
			if p.ForeignRoute != "" {
				foreign++
			}
		}
		for _, r := range st.Refused {
			refused[r.Reason]++
		}
		c.collectWireGuard(ch, st, now)
	}
	for reason, n := range refused {
		gauge(c.refused, float64(n), reason)
	}
	for mode, n := range byMode {
		gauge(c.peers, float64(n), mode)
	}
	gauge(c.unprogrammed, float64(bad))
	gauge(c.foreign, float64(foreign))
	ct := s.counters()
	counter(c.passes, ct.Passes)
	counter(c.netlinkErrors, ct.NetlinkErrors)
	for _, kind := range []string{"route", "neigh", "fdb", "device", "address", "peer"} {
		if _, ok := ct.Repairs[kind]; !ok {
			ct.Repairs[kind] = 0 // every kind is exported, from 0
		}
	}
	for kind, n := range ct.Repairs {
		counter(c.repairs, n, kind)
	}
	buckets := make(map[float64]uint64, len(backend.LatencyBuckets))
	for i, le := range backend.LatencyBuckets {
		buckets[le] = ct.EventLatency.Buckets[i]
	}
	ch <- prometheus.MustNewConstHistogram(c.latency, ct.EventLatency.Count, ct.EventLatency.Sum, buckets)
	ready := 1.0
	for _, chk := range s.readinessLocked() {
		if !chk.OK {
			ready = 0
		}
	}
	gauge(c.ready, ready)
	for _, off := range s.offloadStatuses() {
		if off.Err == "" {
			gauge(c.csumOffload, map[bool]float64{true: 1}[off.TxChecksum], off.Device)
		}
	}
	if len(s.probers) > 0 {
		gauge(c.unreachable, float64(len(s.probers.Status().Unreachable())))
	}
}

// collectKube exports the Kubernetes store's state.
func (c *collector) collectKube(ch chan<- prometheus.Metric, i kubestore.Info) {
	ch <- prometheus.MustNewConstMetric(c.storeInfo, prometheus.GaugeValue, 1, StoreKubernetes)
	ch <- prometheus.MustNewConstMetric(c.kubeSynced, prometheus.GaugeValue, map[bool]float64{true: 1}[i.Synced])
	ch <- prometheus.MustNewConstMetric(c.kubeEvents, prometheus.CounterValue, float64(i.Counters.Events))
	if !i.LastEvent.IsZero() {
		ch <- prometheus.MustNewConstMetric(c.kubeLastEvent, prometheus.GaugeValue, float64(i.LastEvent.UnixNano())/1e9)
	}
}

// collectWireGuard exports each WireGuard peer's handshake age and the
// number of peers without one.
func (c *collector) collectWireGuard(ch chan<- prometheus.Metric, st backend.Status, now time.Time) {
	if len(st.WireGuard) == 0 {
		return
	}
	none := 0
	for _, p := range st.Peers {
		switch {
		case p.WireGuard == nil || p.WireGuard.LatestHandshake.IsZero():
			none++
		default:
			ch <- prometheus.MustNewConstMetric(c.wgAge, prometheus.GaugeValue, now.Sub(p.WireGuard.LatestHandshake).Seconds(), p.Subnet.String())
		}
	}
	ch <- prometheus.MustNewConstMetric(c.wgNone, prometheus.GaugeValue, float64(none))
}
