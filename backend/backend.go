// Package backend defines what the agent asks of a data-plane backend
// (backend/vxlan, backend/hostgw): the lease attributes it publishes, the MTU
// it leaves for containers, and a reconcile loop that keeps the kernel in
// the state the leases describe.
package backend

import (
	"context"
	"encoding/json"
	"log/slog"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/netagent/netagent/iface"
	"github.com/netagent/netagent/lease"
)

// Options is what every backend is built from. A constructor parses and
// validates the backend's fields of Config and touches no kernel state.
type Options struct {
	Log *slog.Logger
	// Handle does all netlink work (netlink.NewHandleAt(ns) in tests).
	Handle *netlink.Handle
	// Netns is the namespace Handle works in, for netlink subscriptions;
	// 0 or netns.None() means the current one.
	Netns netns.NsHandle
	// Ext is the underlay interface, its address and the public IP.
	Ext iface.External
	// Config is the network config; its Backend object holds the
	// backend's own fields (for vxlan: VNI, Port, MTU, GBP, Learning and
	// DirectRouting).
	Config *lease.Config
	// ResyncInterval is the period of full reconcile passes (default 30s).
	ResyncInterval time.Duration
	// NoRepair makes the reconcile loop report, not fix, kernel entries
	// found missing or wrong after they were programmed (a debugging aid;
	// see dataplane.Config.NoRepair).
	NoRepair bool
}

// Update is one change of the desired state, sent to Backend.Run.
type Update struct {
	// Own is this host's lease; non-nil in the first update and whenever the
	// lease changes (re-acquired, another subnet).
	Own *lease.Lease
	// Batch holds lease changes as the watch delivered them. It may include
	// this host's own lease and leases of another backend type: the backend
	// ignores those. A Snapshot batch replaces the whole peer set.
	Batch *lease.Batch
}

// Backend programs one kind of data plane.
type Backend interface {
	// Type is the lease BackendType ("vxlan", "host-gw").
	Type() string
	// MTU is the MTU containers get (FLANNEL_MTU). With both address
	// families it fits both overlays: the smaller of the two.
	MTU() int
	// BackendData is published in this host's lease (nil for none).
	BackendData() (json.RawMessage, error)
	// BackendV6Data is published in this host's lease as BackendV6Data,
	// the IPv6 counterpart of BackendData (nil for none, and when the
	// network has no IPv6 overlay).
	BackendV6Data() (json.RawMessage, error)
	// Run owns the data plane until ctx is done: it applies updates as they
	// come, watches the kernel for changes to what it installed, resyncs
	// periodically, and repairs what is missing or wrong. It returns only
	// when ctx is done or on an error it cannot recover from.
	Run(ctx context.Context, updates <-chan Update) error
	// Ready is closed once the first complete reconcile pass has
	// finished (Status().LastPass is then set): the host can carry
	// traffic. It is never closed if Run fails before.
	Ready() <-chan struct{}
	// Status is a snapshot of the data plane as of the last pass; cheap and
	// safe to call from any goroutine. Status.Peers may be shared between
	// callers and must not be modified.
	Status() Status
}
