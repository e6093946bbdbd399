// Package agent wires netagent's parts into the host agent that `netagent
// run` starts: it waits for a valid network config in etcd, picks the
// external interface, builds the backend the config names, holds this host's
// lease, writes the subnet and Docker files, keeps the masquerade rules, and
// feeds the lease watch to the backend's reconcile loop.
//
// A change of the network config restarts that pipeline in process: the lease
// is re-acquired under the new config and the kernel state follows, without
// the agent exiting.
package agent
