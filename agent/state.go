package agent

import (
	"sync"
	"time"

	"github.com/netagent/netagent/backend"
	"github.com/netagent/netagent/iface"
	"github.com/netagent/netagent/lease"
	"github.com/netagent/netagent/masq"
	"github.com/netagent/netagent/probe"
	"github.com/netagent/netagent/subnet"
	"github.com/netagent/netagent/subnet/kubestore"
)

// maxRecentErrors bounds the errors kept for `netagent status`.
const maxRecentErrors = 20

// leaseHolder is what the state reads of a *subnet.Holder.
type leaseHolder interface {
	Lease() lease.Lease
	LastRenewal() time.Time
}

// state is what the agent knows about itself, for the status socket, the
// health checks and the metrics. The serving goroutine writes it; HTTP
// handlers read snapshots.
type state struct {
	mu      sync.Mutex
	started time.Time
	// registry counts renewals and watch restarts; nil before Run made it.
	registry interface{ Stats() subnet.Stats }
	// storeKind is StoreEtcd or StoreKubernetes; kube is the Kubernetes
	// store in kube mode, else nil.
	storeKind string
	kube      *kubestore.Store
	// etcdContact is the last time the store (etcd, the API server)
	// answered a request of the agent, and etcdErr the error of the last
	// request that failed since then.
	etcdContact time.Time
	etcdErr     string

	config  *lease.Config
	ext     iface.External
	lease   *lease.Lease
	holder  leaseHolder
	backend backend.Backend
	// retired sums the counters of the backends of earlier pipelines, so
	// that the metrics only ever grow.
	retired    backend.Counters
	filesAt    time.Time
	readyAt    time.Time
	masq       masq.Manager
	keeper     *masq.Keeper
	recentErrs []RecentError

	// probeM counts probe results over every pipeline. probers are the
	// current pipeline's, one per address family (none when not probing;
	// probeNote says why).
	// offloadFixed is the explicit offload setting of each vxlan device
	// as last kept (IPv4's first); lastOffload the last change the
	// probers made, by device.
	probeM       *probeMetrics
	probers      proberSet
	probeNote    string
	offloadFixed []probe.OffloadStatus
	lastOffload  map[string]probe.OffloadEvent
	// responders are the current pipeline's probe responders, one per
	// address family; respRetired sums the counters of earlier ones.
	responders  []familyResponder
	respRetired probe.ResponderState
}

func newState(now time.Time) *state {
	return &state{started: now, probeM: newProbeMetrics()}
}

// RecentError is an error the agent met, with when.
type RecentError struct {
	Time    time.Time `json:"time"`
	Message string    `json:"message"`
}

func (s *state) update(f func(s *state)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	f(s)
}

func (s *state) recordError(msg string) {
	s.update(func(s *state) {
		s.recentErrs = append(s.recentErrs, RecentError{Time: time.Now().UTC(), Message: msg})
		if n := len(s.recentErrs); n > maxRecentErrors {
			s.recentErrs = s.recentErrs[n-maxRecentErrors:]
		}
	})
}

// newPipeline forgets what the previous serving pipeline held and starts
// the next one under cfg; the data-plane counters of the previous backend
// are kept in the totals.
func (s *state) newPipeline(cfg *lease.Config) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.backend != nil {
		addCounters(&s.retired, s.backend.Status().Counters)
	}
	s.config, s.lease, s.holder, s.backend = cfg, nil, nil, nil
	s.filesAt, s.readyAt = time.Time{}, time.Time{}
	s.masq, s.keeper = nil, nil
	s.probers, s.probeNote, s.offloadFixed = nil, "not started yet", nil
	s.setResponders(nil)
}

// counters are the data-plane counters since the agent started; s.mu is
// held.
func (s *state) counters() backend.Counters {
	c := backend.Counters{Repairs: map[string]uint64{}}
	addCounters(&c, s.retired)
	if s.backend != nil {
		addCounters(&c, s.backend.Status().Counters)
	}
	return c
}

func addCounters(to *backend.Counters, c backend.Counters) {
	if to.Repairs == nil {
		to.Repairs = map[string]uint64{}
	}
	to.Passes += c.Passes
	to.NetlinkErrors += c.NetlinkErrors
	to.ForeignRoutes += c.ForeignRoutes
	for k, v := range c.Repairs {
		to.Repairs[k] += v
	}
	to.EventLatency.Add(c.EventLatency)
}

// etcdResult records the outcome of a request to etcd.
func (s *state) etcdResult(now time.Time, err error) {
	s.update(func(s *state) {
		if err != nil {
			s.etcdErr = err.Error()
			return
		}
		s.etcdContact, s.etcdErr = now, ""
	})
}

// lastEtcdContact is the last time etcd answered, counting lease renewals;
// s.mu is held.
func (s *state) lastEtcdContact() time.Time {
	t := s.etcdContact
	if s.holder != nil {
		if r := s.holder.LastRenewal(); r.After(t) {
			t = r
		}
	}
	return t
}

// currentLease is the lease held now, with its expiration as of the last
// renewal; s.mu is held.
func (s *state) currentLease() *lease.Lease {
	if s.holder != nil {
		l := s.holder.Lease()
		return &l
	}
	return s.lease
}
