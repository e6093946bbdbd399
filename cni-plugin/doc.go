// Package cniplugin is the CNI plugin of netagent (docs/compatibility.md
// §8); the command netagent-cni (./netagent-cni) runs it. It reads this
// host's lease from the subnet file that the agent writes and hands a
// bridge + host-local configuration to the delegate plugins, as flannel's
// CNI plugin does, so that a container gets an address inside the lease,
// the overlay's MTU and a route to the cluster network.
//
// Verbs: ADD, DEL, CHECK, VERSION, STATUS and GC, for CNI spec 0.3.0 to
// 1.1.0. The delegate configuration used by ADD is cached per attachment, so
// that DEL works after the subnet file has changed or gone.
package cniplugin
