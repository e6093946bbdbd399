// Package probe checks, per peer, that the overlay data path carries
// traffic, and says why when it does not: the "all statuses healthy, but
// traffic does not pass" case (a firewall dropping the VXLAN port, an MTU
// black hole, a checksum offload bug, a stale entry).
//
// # Pieces
//
// A Responder runs on every host. It answers UDP probe datagrams on the
// host's overlay address (OverlayAddr of its own lease: the /32 of
// flannel.<VNI> for vxlan, the cni0 gateway for host-gw) and on its public
// IP, on DefaultPort (8473, next to VXLAN's 8472; configurable, and the
// same on every host). A reply is the request echoed with the same length
// and DF set (over IPv6: not fragmented), so the full-MTU probe tests both
// directions. It answers only
// well-formed requests (24-byte header: magic "NAPB", version, kind, size,
// sequence, send time), never more bytes than it got, at most
// DefaultReplyRate a second, and only to its Sources (the cluster's
// hosts: a lease's public IP or an address inside a lease's subnet), so
// that a forged source cannot make it reflect replies at a third party;
// the rest is counted (Refused). A ResponderKeeper keeps it serving: one
// that cannot bind or fails is opened again after a capped backoff, and
// its State says why it is not serving meanwhile.
//
// A Prober runs on every host and probes each peer in rounds:
//
//  1. If Config.Programmed says the backend has not programmed the peer's
//     route and entries, nothing is sent: CauseNotProgrammed. (A probe
//     would otherwise follow the default route.)
//  2. A small probe (a 52-byte IPv4 packet, 72 bytes over IPv6) to the
//     peer's overlay address, from the own overlay address. A send
//     failing with ENETUNREACH or EHOSTUNREACH also gives
//     CauseNotProgrammed.
//  3. If it is answered, a full-MTU probe: MTU-28 bytes of UDP payload
//     (MTU-48 over IPv6, whose header is 40 bytes), so that the IP packet
//     fills the overlay MTU exactly, with DF set (IP_PMTUDISC_DO; over
//     IPv6, IPV6_PMTUDISC_DO and IPV6_DONTFRAG, so that the sender does not
//     fragment it either). Lost, or refused by the kernel with EMSGSIZE
//     because it learnt a smaller path MTU: CauseLargePacketsLost.
//  4. If the small probe is not answered, a small probe to the peer's
//     public IP. Not answered either: CauseUnderlayUnreachable; answered:
//     CauseNoAnswer (encapsulated traffic is lost on the way).
//  5. A probe (overlay or underlay) answered by ICMP port unreachable:
//     CauseNoResponder, the host is up and its responder is not serving.
//     The prober reads destination-unreachable messages on a raw ICMP
//     socket and matches each to the probe it quotes; its UDP sockets
//     stay unconnected and without IP_RECVERR, so that an ICMP error
//     about one peer never fails a send to another.
//
// Each probe is sent up to Config.Attempts times, waiting Config.Timeout
// for each answer, so that one lost datagram does not make a peer
// unreachable; a round is enough to change a peer's state, so a broken
// path shows within one interval plus one round.
//
// The underlay check is a UDP echo to the same responder rather than an
// ICMP echo: it needs no ping_group_range, tells that the
// agent (not just the kernel) is alive there, and keeps to the rule that
// probing sends traffic only to peers' overlay addresses and public IPs.
//
// # Rate
//
// Every datagram the prober sends, retries included, takes a token from
// one bucket of Config.Rate tokens a second (DefaultRate 20) and
// Config.Burst at most, so a host never sends more than that, whatever
// the cluster size or the number of failing peers. Each peer is probed
// every max(Interval, peers×2/Rate): a healthy round costs two datagrams,
// so with 5,000 peers and the defaults a peer is probed every 500 s. New
// peers get their first round at a random point of the first interval,
// and each next round comes after 0.9–1.1 intervals, so rounds spread out
// and do not line up again. When failing peers need more datagrams than
// the bucket gives, rounds are delayed, not dropped. Replies come back at
// the same rate, so a host also answers, on average, Rate probes a
// second.
//
// # Checksum offload
//
// Some kernels and NICs corrupt the checksums of VXLAN-encapsulated
// packets when TX checksum offload is on for the vxlan device; the
// workaround is `ethtool -K flannel.1 tx off`. Ethtool does that through
// the SIOCETHTOOL ioctl (ETHTOOL_GTXCSUM/ETHTOOL_STXCSUM). Given an
// OffloadSwitch, the prober reports the setting in Status, and with
// Config.AutoOffload it tries it: when a peer is CauseNoAnswer (its
// public IP answers, the overlay does not) and offload is on, it turns
// offload off and probes every no-answer peer again at once. If one of
// them is answered through the overlay, offload stays off (OffloadKeptOff,
// logged, shown in Status). If all fail again (or the trial outlasts a few
// rounds), offload is turned back on (OffloadRestored), and those peers
// are reported CauseNoAnswer with OffloadRuledOut; they are not tried
// again until they have been reachable once. When offload is already off,
// no-answer peers are reported with OffloadRuledOut at once. A trial
// under way when Run returns is rolled back. An explicit setting
// (`--vxlan-tx-csum-offload=on|off`, say) is applied by the caller with
// Ethtool.SetTxChecksum, and AutoOffload is then false.
//
// # Wiring (for the agent)
//
// Per serving pipeline, once the lease and the backend are known:
//
//	own := probe.OverlayAddr(cfg.BackendType, lease.Subnet)
//	r, _ := probe.NewResponder(probe.ResponderConfig{Log: log, Addrs: []netip.Addr{own, ext.PublicIP}})
//	go r.Serve(ctx)
//	sw, _ := probe.OpenEthtool(netns.None(), "flannel.1") // vxlan only
//	p, _ := probe.New(probe.Config{Log: log, LocalOverlay: own, LocalPublic: ext.PublicIP,
//		MTU: be.MTU(), Programmed: programmedFromBackendStatus,
//		Offload: sw, AutoOffload: opts.AutoCsumOffload,
//		OnResult: metrics.observe, OnOffload: metrics.offloadChanged})
//	go p.Run(ctx)
//	p.SetPeers(peersFromLeases) // on every lease batch
//
// Over IPv6 the same, with lease.IPv6Subnet, ext.PublicIPv6 and
// flannel-v6.<VNI>; with both families, MergeStatus(p4.Status(),
// p6.Status()) is the host's view. A changed lease
// (own overlay address) needs a new Responder and Prober.
//
// Status() is the snapshot for `netagent status` (Status.Unreachable() is
// what `--check` fails on); OnResult feeds a probe RTT histogram (Result.RTT
// when Reachable) and a failure counter by Result.Cause (label values:
// Causes). This package imports no metrics library.
//
// Sockets are created in Config.Netns / ResponderConfig.Netns (the
// caller's namespace by default) on a thread switched into it and back; a
// socket keeps its namespace, so tests probe between namespaces without
// ever sending from the test process's own.
//
// # Address families
//
// A Prober probes one family, its LocalOverlay's, IPv4 or IPv6: its
// LocalPublic and its peers' addresses are of that family (SetPeers leaves
// out others). For an IPv6 vxlan overlay the overlay address is the
// network address of the IPv6 lease, the /128 of flannel-v6.<VNI>
// (fc00:5:0:11:: for fc00:5:0:11::/64), and the offload switch is that
// device's; for host-gw, the peer's public IPv6 address. A dual-stack
// host runs a Prober per family, each with its own sockets and rate
// bucket (the agent splits --probe-rate between them, so that the host
// stays within it), and shows them as one with MergeStatus; a peer appears
// once per family, keyed by its subnet of that family. One Responder
// answers on addresses of both families if given them; the agent runs
// one per family, so that a family that fails to bind leaves the other
// probing.
package probe
