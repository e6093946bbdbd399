package agent

import (
	"context"
	"time"

	"github.com/netagent/netagent/lease"
	"github.com/netagent/netagent/subnet"
)

// Store kinds, as the status Report and the metrics name them.
const (
	StoreEtcd       = "etcd"
	StoreKubernetes = "kubernetes"
)

// Store is what the agent consumes of its cluster store: the network
// config, this host's lease and the peers' leases. The etcd Registry
// (etcdStore) and the Kubernetes API (kubeStore) provide it; everything
// built on leases (backends, masquerade, files, probes, status) sees only
// this.
type Store interface {
	// ConfigKey names where the network config comes from (an etcd key,
	// a file), for messages.
	ConfigKey() string
	// WaitConfig returns the network config once there is a valid one.
	WaitConfig(ctx context.Context) (*lease.Config, error)
	// WatchConfig delivers the config, then each change, until ctx is
	// done.
	WatchConfig(ctx context.Context) <-chan subnet.ConfigUpdate
	// HoldAndWatch acquires this host's lease, keeps it until ctx is
	// done or the Holder is closed, and watches every lease: a Snapshot
	// first, then the changes.
	HoldAndWatch(ctx context.Context, cfg *lease.Config, opts subnet.AcquireOptions) (Holder, <-chan lease.Batch, error)
	// Stats counts what the store's background loops did.
	Stats() subnet.Stats
}

// Holder keeps this host's lease (subnet.Holder, kubestore.Holder).
type Holder interface {
	Lease() lease.Lease
	// Changes delivers each lease held after the first; it is closed
	// when the Holder stops.
	Changes() <-chan lease.Lease
	LastRenewal() time.Time
	Done() <-chan struct{}
	Close() error
}

// etcdStore is the etcd Registry as a Store: only HoldAndWatch differs,
// returning the Holder as the interface.
type etcdStore struct{ *subnet.Registry }

func (s etcdStore) HoldAndWatch(ctx context.Context, cfg *lease.Config, opts subnet.AcquireOptions) (Holder, <-chan lease.Batch, error) {
	h, watch, err := s.Registry.HoldAndWatch(ctx, cfg, opts)
	if err != nil {
		return nil, nil, err
	}
	return h, watch, nil
}
