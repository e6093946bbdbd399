// Package lease holds the plain values of the cluster's shared state: the
// network config stored under <prefix>/config, each host's subnet lease
// under <prefix>/subnets/, and the batches of lease events a watch delivers.
//
// It has no dependency on the store: package subnet reads and writes these
// values in etcd, and the backends consume them without linking the etcd
// client. The key layout and the JSON are shared with flannel (SPEC
// section 1).
package lease
