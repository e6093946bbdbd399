// Package kubelab runs a real Kubernetes API server (kube-apiserver on its
// own etcd) for a lab, and keeps the pieces every such server of the
// project shares: the binaries (scripts/kube-binaries.sh), the
// credentials (serving certificate, service-account keys, bearer tokens,
// kubeconfig files) and the servers' command lines. internal/kubetest runs
// the same server in a test namespace from these pieces.
//
// On a lab (Start), etcd and the API server run in the lab's etcd
// namespace, the API server listening on the namespace's underlay address
// (lab.EtcdAddr, or lab.EtcdAddrV6 on an IPv6-only underlay) where every
// host reaches it. Start then does what a cluster's other components
// would have done before an agent starts:
//   - the agent's identity "netagent" (a bearer token) is bound to the
//     ClusterRole of dist/kubernetes/netagent.yaml, its rules read from
//     that file, so that the lab exercises the RBAC that is shipped;
//   - one Node per host, named after the host, is registered with the
//     host's underlay addresses in status.addresses, as a kubelet would;
//   - the Nodes' spec.podCIDR/podCIDRs are patched as kube-controller-manager
//     --allocate-node-cidrs would (see AllocatePodCIDRs);
//   - every host gets a kubeconfig file and a net-conf.json in its
//     directory; AgentArgs and AgentEnv are what its agent runs with.
package kubelab
