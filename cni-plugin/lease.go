package cniplugin

import (
	"net/netip"

	"github.com/containernetworking/cni/pkg/types"
	types100 "github.com/containernetworking/cni/pkg/types/100"

	"github.com/netagent/netagent/subnetfile"
)

// checkLease checks that the container's addresses in res lie inside the
// lease of their family in info. The container's addresses are those on the
// interface ifName inside the sandbox, and those bound to no interface;
// addresses that other plugins of the chain put on other interfaces are not
// this plugin's business.
func checkLease(res *types100.Result, info subnetfile.Info, ifName string) error {
	for _, ip := range res.IPs {
		if ip.Interface != nil {
			i := *ip.Interface
			if i < 0 || i >= len(res.Interfaces) {
				return errf(types.ErrDecodingFailure, "prevResult: address %s names interface %d of %d", ip.Address.String(), i, len(res.Interfaces))
			}
			if iface := res.Interfaces[i]; iface.Sandbox == "" || iface.Name != ifName {
				continue
			}
		}
		addr, ok := netip.AddrFromSlice(ip.Address.IP)
		if !ok {
			return errf(types.ErrDecodingFailure, "prevResult: address %q is not an IP address", ip.Address.String())
		}
		addr = addr.Unmap()
		lease, family := info.Subnet, "IPv4"
		if addr.Is6() {
			lease, family = info.IPv6Subnet, "IPv6"
		}
		if !lease.IsValid() {
			return errf(types.ErrInternal, "container address %s: this host has no %s lease any more; the container must be re-created", addr, family)
		}
		if !lease.Contains(addr) {
			return errf(types.ErrInternal, "container address %s is outside this host's current lease %s: the lease changed since ADD; the container must be re-created", addr, lease)
		}
	}
	return nil
}
