package cniplugin

import (
	"maps"

	"github.com/containernetworking/cni/pkg/types"
	types100 "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/cni/pkg/version"
)

// parsePrevResult returns the netconf's prevResult as a current result, or
// nil when there is none.
func parsePrevResult(n *netConf) (*types100.Result, error) {
	if n.RawPrevResult == nil {
		return nil, nil
	}
	// ParsePrevResult consumes the map: give it a copy.
	conf := &types.PluginConf{CNIVersion: n.CNIVersion, RawPrevResult: maps.Clone(n.RawPrevResult)}
	if err := version.ParsePrevResult(conf); err != nil {
		return nil, errf(types.ErrDecodingFailure, "prevResult: %v", err)
	}
	res, err := types100.NewResultFromResult(conf.PrevResult)
	if err != nil {
		return nil, errf(types.ErrDecodingFailure, "prevResult: %v", err)
	}
	return res, nil
}

// mergeResult appends the delegate's result to the previous plugins' result,
// as a plugin that is not first in a chain must pass prevResult on: its
// interfaces, addresses (their interface indexes shifted), routes, and its
// DNS when prev has none.
func mergeResult(prev, cur *types100.Result) *types100.Result {
	out := &types100.Result{CNIVersion: cur.CNIVersion, DNS: prev.DNS}
	for _, i := range prev.Interfaces {
		out.Interfaces = append(out.Interfaces, i.Copy())
	}
	for _, ip := range prev.IPs {
		out.IPs = append(out.IPs, ip.Copy())
	}
	for _, r := range prev.Routes {
		out.Routes = append(out.Routes, r.Copy())
	}
	shift := len(out.Interfaces)
	for _, i := range cur.Interfaces {
		out.Interfaces = append(out.Interfaces, i.Copy())
	}
	for _, ip := range cur.IPs {
		c := ip.Copy()
		if c.Interface != nil {
			c.Interface = types100.Int(*c.Interface + shift)
		}
		out.IPs = append(out.IPs, c)
	}
	for _, r := range cur.Routes {
		out.Routes = append(out.Routes, r.Copy())
	}
	if out.DNS.IsEmpty() {
		out.DNS = cur.DNS
	}
	return out
}

// delegatePart returns the part of a chain's result that the delegate made:
// the interfaces outside the sandbox and the container's ifName, the
// addresses on ifName (or on no interface), and the routes. The delegate's
// CHECK is given this, not the whole chain's result: bridge refuses any
// other interface in the sandbox (such as loopback's lo) and wants every
// address on ifName.
func delegatePart(res *types100.Result, ifName string) *types100.Result {
	out := &types100.Result{CNIVersion: res.CNIVersion, DNS: res.DNS}
	index := make(map[int]int) // res's interface index -> out's
	for i, iface := range res.Interfaces {
		if iface.Sandbox == "" || iface.Name == ifName {
			index[i] = len(out.Interfaces)
			out.Interfaces = append(out.Interfaces, iface.Copy())
		}
	}
	for _, ip := range res.IPs {
		c := ip.Copy()
		if c.Interface != nil {
			i, ok := index[*c.Interface]
			if !ok || out.Interfaces[i].Sandbox == "" {
				continue
			}
			c.Interface = types100.Int(i)
		}
		out.IPs = append(out.IPs, c)
	}
	for _, r := range res.Routes {
		out.Routes = append(out.Routes, r.Copy())
	}
	return out
}
