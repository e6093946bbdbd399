// Package agent wires netagent's parts into the host agent that `netagent
// run` starts: it waits for a valid network config in etcd, picks the
// external interface, builds the backend the config names, holds this host's
// lease, writes the subnet and Docker files, keeps the masquerade rules, and
// feeds the lease watch to the backend's reconcile loop.
//
// A change of the network config restarts that pipeline in process: the lease
// is re-acquired under the new config and the kernel state follows, without
// the agent exiting.
//
// The cluster store is a Store (store.go): etcd (subnet.Registry), or with
// --kube-subnet-mgr the Kubernetes API (subnet/kubestore: the Node's pod
// CIDR is the lease, its annotations publish it, the config is a file).
// Everything after the store (backends, masquerade, files, probes,
// status) sees only leases and does not know which store gave them.
package agent
