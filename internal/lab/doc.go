// Package lab builds a simulated netagent cluster on one machine out of
// network namespaces, for the end-to-end tests and the netagent-lab command.
//
// # Topology
//
// Every namespace is named with a per-lab prefix P ("na" and four random
// characters, e.g. "na3kx9"), so that labs running at the same time never
// meet and Close can find everything it made:
//
//	namespace   links                          addresses
//	P-sw        br0 (bridge, underlay A)       none: a pure L2 switch
//	            br1 (bridge, underlay B, only with routed hosts)
//	            rt0, rt1, etcd, h1..hN: bridge ports, peers of the eth0/eth1 below
//	P-rt        eth0 (port of br0)             192.168.77.1/24, ip_forward=1
//	            eth1 (port of br1, if any)     192.168.88.1/24
//	P-etcd      eth0 (port of br0)             192.168.77.2/24, default via .1;
//	                                           etcd serves http://192.168.77.2:2379;
//	                                           with internal/lab/kubelab, kube-apiserver
//	                                           https://192.168.77.2:6443 on its own etcd
//	                                           (127.0.0.1:12379)
//	P-etcdI     eth0 (port of br0)             192.168.77.(1+I)/24: member I (2..8) of an
//	                                           etcd cluster (StartEtcdCluster; member 1 is P-etcd)
//	P-hI        eth0 (port of br0 or br1)      192.168.77.(10+I)/24, default via 192.168.77.1
//	                                           (routed hosts: 192.168.88.(10+I)/24 via 192.168.88.1)
//	            cni0 (bridge, made by AttachContainer) first address of the container subnet
//	P-hI-NAME   eth0 (port of the host's cni0) container address, default via cni0's address
//
// Hosts 1..Options.Hosts sit on underlay A (192.168.77.0/24), hosts
// Options.Hosts+1.. on underlay B (192.168.88.0/24), reachable from A only
// through the router. Underlay links have MTU 1500. Every namespace has its
// loopback up; host namespaces have ip_forward=1, as a container host
// would. Every host namespace has a default route through its underlay, so
// an agent's default-interface selection picks eth0.
//
// With Options.IPv6 set to DualStack, every underlay interface also has an
// IPv6 address: the router fd77::1/64 (and fd88::1/64 on underlay B), etcd
// fd77::2/64 (serving on both families), host I fd77::(10+I)/64 (the
// decimal digits: h1 is fd77::11; fd88:: behind the router), with IPv6
// default routes via the router and IPv6 forwarding on. IPv6Only leaves
// the IPv4 addresses out: etcd serves http://[fd77::2]:2379. Either way
// duplicate address detection is off in every namespace (accept_dad=0
// before any link is made), so no address is ever tentative.
//
// # Safety
//
// The lab itself runs in the machine's initial network namespace, which is
// connected to the outside, so it never programs that namespace and never
// sends a packet from it to a topology address:
//   - New refuses to run unless root, and checks that every namespace it
//     created is not the initial one before programming it.
//   - Links are created inside their namespaces (`ip -n NS link add ... peer
//     ... netns OTHER`), so no link ever appears in the initial namespace,
//     not even for a moment. Every command that programs a namespace runs as
//     `ip -n NS` or `ip netns exec NS` for a namespace the lab owns.
//   - The lab's own connections into the topology (EtcdClient, DialInNS,
//     HTTPClientInNS) use sockets created inside a topology namespace.
//   - Every process the lab starts runs in a lab namespace with
//     NETAGENT_REFUSE_INITIAL_NETNS=1 and dies with the lab (Close kills it
//     by PID; the kernel kills it if the lab process dies first).
//   - Close deletes every namespace the lab made, which removes every link
//     and address in it; it is idempotent and also cleans up after a
//     partially failed New.
package lab
