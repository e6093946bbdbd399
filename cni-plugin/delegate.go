package cniplugin

import (
	"encoding/json"
	"fmt"
	"maps"
	"net/netip"

	"github.com/containernetworking/cni/pkg/types"

	"github.com/netagent/netagent/subnetfile"
)

// buildDelegate returns the delegate config for this host's lease
// (docs/compatibility.md §8):
//
//	{"cniVersion":<netconf's>,"name":<netconf's>,"type":"bridge",
//	 "isGateway":true,"isDefaultGateway":true,"hairpinMode":true,
//	 "ipMasq":<!FLANNEL_IPMASQ>,"mtu":<FLANNEL_MTU>,
//	 "ipam":{"type":"host-local","ranges":[[{"subnet":<lease>}]],
//	         "routes":[{"dst":<FLANNEL_NETWORK>}]}}
//
// With an IPv6 lease there is one range per family and a route to each
// network. The netconf's delegate fields override the defaults (type,
// isGateway, isDefaultGateway, hairpinMode, ipMasq, mtu or any other
// delegate field) but never name, cniVersion or the range; the bridge
// defaults are set only when the delegate is bridge. The route to the
// cluster network is always there, so that a container whose delegate sets
// isDefaultGateway false still reaches the overlay (flannel does the same).
// The netconf's ipam routes follow the network routes.
func buildDelegate(n *netConf, info subnetfile.Info) ([]byte, error) {
	d := make(map[string]any, len(n.Delegate)+10)
	maps.Copy(d, n.Delegate)
	d["type"] = n.delegateType
	setDefault := func(k string, v any) {
		if _, ok := d[k]; !ok {
			d[k] = v
		}
	}
	if n.delegateType == defaultDelegateType {
		setDefault("isGateway", true)
		setDefault("isDefaultGateway", true)
		setDefault("hairpinMode", true)
	}
	setDefault("ipMasq", !info.IPMasq)
	setDefault("mtu", info.MTU)
	d["name"] = n.Name
	d["cniVersion"] = n.CNIVersion
	if n.RuntimeConfig != nil {
		d["runtimeConfig"] = n.RuntimeConfig
	}

	var ranges [][]map[string]string
	routes := []types.Route{}
	for _, fam := range []struct{ network, lease string }{
		{prefixString(info.Network), prefixString(info.Subnet)},
		{prefixString(info.IPv6Network), prefixString(info.IPv6Subnet)},
	} {
		if fam.lease != "" {
			ranges = append(ranges, []map[string]string{{"subnet": fam.lease}})
		}
		if fam.network != "" {
			dst, err := types.ParseCIDR(fam.network)
			if err != nil {
				return nil, fmt.Errorf("network %s: %w", fam.network, err)
			}
			routes = append(routes, types.Route{Dst: *dst})
		}
	}
	if len(ranges) == 0 {
		return nil, errf(types.ErrInvalidNetworkConfig, "the subnet file names no lease")
	}
	routes = append(routes, n.extraRoutes...)
	ipam := map[string]any{
		"type":   ipamType,
		"ranges": ranges,
		"routes": routes,
	}
	if n.ipamDataDir != "" {
		ipam["dataDir"] = n.ipamDataDir
	}
	d["ipam"] = ipam
	data, err := json.Marshal(d)
	if err != nil {
		return nil, errf(types.ErrInvalidNetworkConfig, "encoding the delegate config: %v", err)
	}
	return data, nil
}

// prefixString returns p's network in CIDR notation, or "" when p is not
// set.
func prefixString(p netip.Prefix) string {
	if !p.IsValid() {
		return ""
	}
	return p.Masked().String()
}

// delegateHeader is what the plugin reads back from a delegate config.
type delegateHeader struct {
	Name string `json:"name"`
	Type string `json:"type"`
	IPAM struct {
		Type string `json:"type"`
	} `json:"ipam"`
}

// parseDelegateHeader decodes the fields the plugin needs from a delegate
// config and checks the type is a plain file name.
func parseDelegateHeader(conf []byte) (delegateHeader, error) {
	var h delegateHeader
	if err := json.Unmarshal(conf, &h); err != nil {
		return h, err
	}
	if !isPlainName(h.Type) {
		return h, fmt.Errorf("delegate type %q is not a plain file name", h.Type)
	}
	if h.IPAM.Type != "" && !isPlainName(h.IPAM.Type) {
		return h, fmt.Errorf("ipam type %q is not a plain file name", h.IPAM.Type)
	}
	return h, nil
}

// withKeys returns conf with the given top-level keys set.
func withKeys(conf []byte, set map[string]any) ([]byte, error) {
	var m map[string]json.RawMessage
	if err := json.Unmarshal(conf, &m); err != nil {
		return nil, err
	}
	for k, v := range set {
		raw, err := json.Marshal(v)
		if err != nil {
			return nil, err
		}
		m[k] = raw
	}
	return json.Marshal(m)
}
