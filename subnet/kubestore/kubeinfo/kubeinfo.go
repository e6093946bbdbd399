// Package kubeinfo holds what the agent shows of the Kubernetes store
// (status, metrics) and the store's defaults, without the Kubernetes client:
// the agent imports it in every build, while only a build with the
// Kubernetes store (netagent-kube) links subnet/kubestore and client-go.
package kubeinfo

import "time"

// DefaultAnnotationPrefix is flannel's --kube-annotation-prefix default.
const DefaultAnnotationPrefix = "flannel.alpha.coreos.com"

// DefaultNetConfigPath is flannel's --net-config-path default.
const DefaultNetConfigPath = "/etc/kube-flannel/net-conf.json"

// Info describes a Store for the agent's status: where it reads, for
// which Node, and what it has seen.
type Info struct {
	// APIServer is the API server's scheme://host:port, without
	// credentials or path.
	APIServer        string `json:"api_server"`
	Node             string `json:"node"`
	AnnotationPrefix string `json:"annotation_prefix"`
	NetConfigPath    string `json:"net_config_path"`
	// Synced is true once the Node informer has listed the Nodes.
	Synced bool `json:"synced"`
	// LastEvent is when the informer last delivered a Node (added,
	// updated, deleted or listed again); zero before the first.
	LastEvent time.Time    `json:"last_event"`
	Counters  InfoCounters `json:"counters"`
}

// InfoCounters are the Store's counters since Open.
type InfoCounters struct {
	// Events are the Node events the informer delivered.
	Events uint64 `json:"events"`
	// Patches are the annotation patches of this host's Node, and
	// PatchFailures the ones that failed.
	Patches       uint64 `json:"patches"`
	PatchFailures uint64 `json:"patch_failures"`
	// WatchErrors are failed lists and watches of Nodes (each followed
	// by a list).
	WatchErrors uint64 `json:"watch_errors"`
	// Losses are disappearances of this host's Node, Restores patches
	// that put back annotations someone removed or changed.
	Losses   uint64 `json:"losses"`
	Restores uint64 `json:"restores"`
}
