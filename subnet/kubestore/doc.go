// Package kubestore keeps the leases on the Kubernetes API instead of etcd,
// with the semantics of flannel's kube subnet manager (--kube-subnet-mgr),
// so that flannel and netagent nodes share one cluster:
//
//   - this host's subnet(s) are its Node's spec.podCIDR/podCIDRs, allocated
//     by the controller manager (--allocate-node-cidrs); Hold waits for
//     them;
//   - what a lease publishes (backend type and data, public addresses) is
//     written in the Node's annotations under a prefix (default
//     flannel.alpha.coreos.com), patched through nodes/status and only
//     when different;
//   - the peers are the Nodes whose annotations say kube-subnet-manager
//     "true", read from one Node informer; a Node deleted, or its
//     annotations removed, is a lease gone;
//   - the network config is a file (net-conf.json, from a ConfigMap),
//     parsed as the etcd config is (lease.ParseConfig).
//
// The Store talks to the API server through client-go's REST client on a
// scheme of its own (client.go), in protobuf, not through the typed
// clientset, whose scheme of every API group would double the agent's
// binary and slow its start; internal/nodeann reads and writes a Node's
// lease.
//
// A Store offers the methods of subnet.Registry that the agent consumes
// (WaitConfig, WatchConfig, WatchLeases, Hold, Stats), delivering the same
// lease.Batch values: a Snapshot first, then the changes.
package kubestore
