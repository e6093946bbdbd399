//go:build !netagent_nokube

package main

// The Kubernetes store (--kube-subnet-mgr) is linked in unless the build
// says netagent_nokube: the package builds netagent without it (hosts on
// etcd then carry none of the Kubernetes client) and netagent-kube with
// it; the former runs the latter for kube mode (kubeexec.go).
import _ "github.com/netagent/netagent/agent/kubemode"
