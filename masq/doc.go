// Package masq keeps the masquerade and forwarding rules of an overlay node
// in the kernel (docs/compatibility.md §7), with iptables or nftables.
//
// With cluster network N and this host's lease S, traffic leaving the
// cluster network is masqueraded, traffic inside it is not, and forwarding
// to and from N is accepted:
//
//	nat    FLANNEL-POSTRTG (jumped to from POSTROUTING)
//	       -m mark --mark 0x4000/0x4000 -j RETURN
//	       -s S -d N -j RETURN
//	       -s N -d S -j RETURN
//	       ! -s N -d S -j RETURN
//	       -s N ! -d 224.0.0.0/4 -j MASQUERADE --random-fully
//	       ! -s N -d N -j MASQUERADE --random-fully
//	filter FLANNEL-FWD (jumped to from FORWARD)
//	       -s N -j ACCEPT
//	       -d N -j ACCEPT
//
// IPv6 is the same with ip6tables and ff00::/8. The chain names are flannel's,
// which its users' firewall rules expect. Another instance on the same host
// (another overlay network) uses its own names, InstanceNames: the chains
// FLANNEL-POSTRTG-<id> and FLANNEL-FWD-<id>, the tables netagent_<id>.
//
// A Manager is declarative: Apply reads what is in the kernel and changes it
// only where it differs from the desired rules, in one atomic commit per
// table, so rules already in place (after an agent restart, say) are kept
// as they are and traffic is never left unmasqueraded. IPTables replaces
// only its own chains with `iptables-restore --noflush`; NFTables owns the
// tables `ip netagent` and `ip6 netagent` and replaces them with one
// `nft -f` transaction. Keeper re-applies the rules periodically and on
// demand, repairing what others changed.
//
// Managers act on the network namespace of the calling thread: iptables and
// nft are executed from it and inherit it.
package masq
