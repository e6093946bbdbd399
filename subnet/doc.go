// Package subnet owns netagent's view of the cluster store (etcd v3): the
// network config under <prefix>/config, this host's subnet lease under
// <prefix>/subnets/, and the watch of every other host's lease.
//
// The key layout and the lease JSON are shared with flannel
// (docs/compatibility.md §1, §3), so that netagent and flannel nodes can
// lease from one pool side by side.
package subnet
