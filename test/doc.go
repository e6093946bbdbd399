// Package test holds netagent's end-to-end tests: real netagent binaries
// run as hosts in network namespaces (internal/lab) against a real etcd in
// the topology, with containers attached by the real CNI plugins. Every
// test needs root and removes all it makes.
package test
