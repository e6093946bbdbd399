package kubelab

import (
	"fmt"
	"math/big"
	"net/netip"

	"github.com/netagent/netagent/lease"
)

// AllocatePodCIDRs returns the pod CIDRs of the i-th Node (from 0) as
// kube-controller-manager --allocate-node-cidrs allocates them when it is
// run with --cluster-cidr set to the network config's Network (and
// IPv6Network, after it, on a dual-stack network) and
// --node-cidr-mask-size-ipv4/-ipv6 set to SubnetLen/IPv6SubnetLen: its
// range allocator hands out each cluster CIDR's subnets in order from the
// first one (index 0, unlike the etcd store, which leaves the first subnet
// out) to Nodes in the order it sees them, one per family, IPv4 first.
// SubnetMin and SubnetMax are not the controller manager's to know: they
// are ignored, as they are in a Kubernetes cluster.
func AllocatePodCIDRs(cfg *lease.Config, i int) ([]netip.Prefix, error) {
	var out []netip.Prefix
	if cfg.EnableIPv4 {
		p, err := nthSubnet(cfg.Network, cfg.SubnetLen, i)
		if err != nil {
			return nil, err
		}
		out = append(out, p)
	}
	if cfg.EnableIPv6 {
		p, err := nthSubnet(cfg.IPv6Network, cfg.IPv6SubnetLen, i)
		if err != nil {
			return nil, err
		}
		out = append(out, p)
	}
	return out, nil
}

// nthSubnet is the i-th subnet of length bits in network.
func nthSubnet(network netip.Prefix, bits, i int) (netip.Prefix, error) {
	network = network.Masked()
	size := network.Addr().BitLen()
	if bits < network.Bits() || bits > size || i < 0 {
		return netip.Prefix{}, fmt.Errorf("kubelab: no subnet %d of /%d in %s", i, bits, network)
	}
	if n := bits - network.Bits(); n < 63 && int64(i) >= int64(1)<<n {
		return netip.Prefix{}, fmt.Errorf("kubelab: %s has %d subnets of /%d, no room for Node %d", network, int64(1)<<n, bits, i+1)
	}
	base := new(big.Int).SetBytes(network.Addr().AsSlice())
	base.Add(base, new(big.Int).Lsh(big.NewInt(int64(i)), uint(size-bits)))
	b := base.FillBytes(make([]byte, size/8))
	addr, _ := netip.AddrFromSlice(b)
	return netip.PrefixFrom(addr, bits), nil
}
