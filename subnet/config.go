package subnet

import (
	"encoding/json"
	"errors"
	"net/netip"
)

// ErrInvalidConfig is wrapped by every error about the network config.
var ErrInvalidConfig = errors.New("subnet: invalid network config")

// Config is the network config stored under <prefix>/config, after defaults
// have been applied and the whole of it validated (SPEC section 1).
type Config struct {
	EnableIPv4 bool
	EnableIPv6 bool

	// Network is the IPv4 overlay; SubnetLen the per-host prefix length;
	// SubnetMin and SubnetMax the first and last subnet that may be leased.
	// Valid only when EnableIPv4.
	Network   netip.Prefix
	SubnetLen int
	SubnetMin netip.Prefix
	SubnetMax netip.Prefix

	// The same for IPv6; valid only when EnableIPv6.
	IPv6Network   netip.Prefix
	IPv6SubnetLen int
	IPv6SubnetMin netip.Prefix
	IPv6SubnetMax netip.Prefix

	// EnableNFTables asks for nftables instead of iptables for the
	// masquerade and forward rules (flannel's EnableNFTables).
	EnableNFTables bool

	// BackendType is Backend.Type ("vxlan" when Backend is absent).
	BackendType string
	// Backend is the raw Backend object, for the backend to parse its own
	// fields from; never nil ({"Type":"vxlan"} when absent).
	Backend json.RawMessage
}

// ParseConfig parses and validates a network config (SPEC section 1): field
// names match case-insensitively, defaults are applied, and every error
// names the field and the reason, wrapping ErrInvalidConfig.
func ParseConfig(data []byte) (*Config, error) {
	return nil, errors.New("not implemented yet")
}
