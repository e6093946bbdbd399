package lease

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"math/bits"
	"net/netip"
	"strconv"
	"strings"
	"unicode/utf8"
)

// ErrInvalidConfig is wrapped by every error about the network config.
var ErrInvalidConfig = errors.New("subnet: invalid network config")

// Config is the network config stored under <prefix>/config, after defaults
// have been applied and the whole of it validated (docs/compatibility.md §2).
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

// The top-level fields of the network config, as docs/compatibility.md §2
// spells them.
const (
	cfgEnableIPv4     = "EnableIPv4"
	cfgEnableIPv6     = "EnableIPv6"
	cfgEnableNFTables = "EnableNFTables"
	cfgNetwork        = "Network"
	cfgSubnetLen      = "SubnetLen"
	cfgSubnetMin      = "SubnetMin"
	cfgSubnetMax      = "SubnetMax"
	cfgIPv6Network    = "IPv6Network"
	cfgIPv6SubnetLen  = "IPv6SubnetLen"
	cfgIPv6SubnetMin  = "IPv6SubnetMin"
	cfgIPv6SubnetMax  = "IPv6SubnetMax"
	cfgBackend        = "Backend"
)

// cfgKnownFields lists every top-level field ParseConfig understands.
var cfgKnownFields = [...]string{
	cfgEnableIPv4, cfgEnableIPv6, cfgEnableNFTables,
	cfgNetwork, cfgSubnetLen, cfgSubnetMin, cfgSubnetMax,
	cfgIPv6Network, cfgIPv6SubnetLen, cfgIPv6SubnetMin, cfgIPv6SubnetMax,
	cfgBackend,
}

// cfgDefaultBackend is the Backend used when the config has none:
// docs/compatibility.md §2 follows flannel's documentation (vxlan), not its
// code (udp).
const cfgDefaultBackend = `{"Type":"vxlan"}`

// ParseConfig parses and validates a network config (docs/compatibility.md
// §2): field names match case-insensitively, defaults are applied, and
// every error names the field and the reason, wrapping ErrInvalidConfig.
//
// The input must be one UTF-8 JSON object and nothing else. A field given
// twice (in any mix of cases) is an error. Unknown fields are ignored, as
// flannel does; UnknownConfigFields names them. A field whose value is null
// counts as absent, and so do the zero values flannel itself treats as
// "unset": SubnetLen 0, and a SubnetMin or SubnetMax that is "" or the
// unspecified address. Fields of a disabled address family must have the
// right JSON type but are otherwise ignored and left zero in the Config.
//
// Where flannel is lax, ParseConfig refuses: a Network with host bits set
// (flannel masks it), SubnetMin after SubnetMax, a SubnetMin or SubnetMax
// given as a CIDR whose length is not the subnet length.
func ParseConfig(data []byte) (*Config, error) {
	if !utf8.Valid(data) {
		return nil, cfgErrorf("config is not valid UTF-8")
	}
	fields, err := cfgObjectFields(data, "config")
	if err != nil {
		return nil, err
	}
	raw := make(map[string]json.RawMessage, len(fields))
	given := make(map[string]string, len(fields))
	for _, f := range fields {
		known := cfgKnownName(f.name)
		if known == "" {
			continue
		}
		if prev, dup := given[known]; dup {
			return nil, cfgErrorf("%s is given more than once (as %q and %q)", known, prev, f.name)
		}
		given[known] = f.name
		if string(f.raw) != "null" {
			raw[known] = f.raw
		}
	}

	c := &Config{EnableIPv4: true}
	for _, b := range []struct {
		name string
		dst  *bool
	}{
		{cfgEnableIPv4, &c.EnableIPv4},
		{cfgEnableIPv6, &c.EnableIPv6},
		{cfgEnableNFTables, &c.EnableNFTables},
	} {
		if r, ok := raw[b.name]; ok {
			if err := json.Unmarshal(r, b.dst); err != nil {
				return nil, cfgTypeError(b.name, "true or false", r)
			}
		}
	}
	if !c.EnableIPv4 && !c.EnableIPv6 {
		return nil, cfgErrorf("%s and %s are both false: no address family is enabled", cfgEnableIPv4, cfgEnableIPv6)
	}

	v4, err := cfgParseFamily(cfgIPv4Rules, raw)
	if err != nil {
		return nil, err
	}
	v6, err := cfgParseFamily(cfgIPv6Rules, raw)
	if err != nil {
		return nil, err
	}
	if c.EnableIPv4 {
		if err := v4.validate(cfgIPv4Rules); err != nil {
			return nil, err
		}
		c.Network, c.SubnetLen, c.SubnetMin, c.SubnetMax = v4.network, v4.subnetLen, v4.min, v4.max
	}
	if c.EnableIPv6 {
		if err := v6.validate(cfgIPv6Rules); err != nil {
			return nil, err
		}
		c.IPv6Network, c.IPv6SubnetLen, c.IPv6SubnetMin, c.IPv6SubnetMax = v6.network, v6.subnetLen, v6.min, v6.max
	}

	c.Backend, c.BackendType, err = cfgParseBackend(raw[cfgBackend])
	if err != nil {
		return nil, err
	}
	return c, nil
}

// UnknownConfigFields returns the names of the top-level fields of a network
// config that ParseConfig ignores, in the order they appear, each once, so
// that the agent can warn about them (a misspelt "SubnetMn" would otherwise
// silently fall back to the default). It returns nil when there are none or
// when data is not a JSON object (ParseConfig reports that).
func UnknownConfigFields(data []byte) []string {
	fields, err := cfgObjectFields(data, "config")
	if err != nil {
		return nil
	}
	var unknown []string
	seen := make(map[string]bool)
	for _, f := range fields {
		if cfgKnownName(f.name) == "" && !seen[f.name] {
			seen[f.name] = true
			unknown = append(unknown, f.name)
		}
	}
	return unknown
}

// Fits reports whether a lease with subnets v4 and v6 fits the config, so
// that it may be kept or reused: for each enabled family the subnet is a
// network address of length SubnetLen (IPv6SubnetLen) within
// [SubnetMin, SubnetMax]; for each disabled family the subnet is absent
// (invalid). A dual-stack lease does not fit an IPv4-only config, nor an
// IPv4-only lease a dual-stack config.
func (c *Config) Fits(v4, v6 netip.Prefix) bool {
	return cfgFitsFamily(c.EnableIPv4, false, v4, c.SubnetLen, c.SubnetMin, c.SubnetMax) &&
		cfgFitsFamily(c.EnableIPv6, true, v6, c.IPv6SubnetLen, c.IPv6SubnetMin, c.IPv6SubnetMax)
}

func cfgFitsFamily(enabled, v6 bool, p netip.Prefix, subnetLen int, lo, hi netip.Prefix) bool {
	if !enabled {
		return !p.IsValid()
	}
	a := p.Addr()
	if !p.IsValid() || p.Bits() != subnetLen || p.Masked() != p || !cfgIsFamily(a, v6) {
		return false
	}
	return lo.Addr().Compare(a) <= 0 && a.Compare(hi.Addr()) <= 0
}

// PoolSize returns the number of IPv4 subnets in [SubnetMin, SubnetMax]
// (0 when IPv4 is disabled), saturating at math.MaxUint64.
func (c *Config) PoolSize() (v4 uint64) {
	if !c.EnableIPv4 {
		return 0
	}
	return cfgPoolSize(c.SubnetMin, c.SubnetMax, c.SubnetLen)
}

// IPv6PoolSize returns the number of IPv6 subnets in
// [IPv6SubnetMin, IPv6SubnetMax] (0 when IPv6 is disabled), saturating at
// math.MaxUint64.
func (c *Config) IPv6PoolSize() uint64 {
	if !c.EnableIPv6 {
		return 0
	}
	return cfgPoolSize(c.IPv6SubnetMin, c.IPv6SubnetMax, c.IPv6SubnetLen)
}

func cfgPoolSize(lo, hi netip.Prefix, subnetLen int) uint64 {
	if !lo.IsValid() || !hi.IsValid() || hi.Addr().Less(lo.Addr()) {
		return 0
	}
	loHi, loLo := cfgUint128(lo.Addr())
	hiHi, hiLo := cfgUint128(hi.Addr())
	dLo, borrow := bits.Sub64(hiLo, loLo, 0)
	dHi, _ := bits.Sub64(hiHi, loHi, borrow)
	// Shift the difference right by the host bits of a subnet.
	shift := uint(lo.Addr().BitLen() - subnetLen)
	switch {
	case shift >= 128:
		dHi, dLo = 0, 0
	case shift >= 64:
		dHi, dLo = 0, dHi>>(shift-64)
	case shift > 0:
		dHi, dLo = dHi>>shift, dLo>>shift|dHi<<(64-shift)
	}
	if dHi != 0 || dLo == math.MaxUint64 {
		return math.MaxUint64
	}
	return dLo + 1
}

// cfgUint128 returns an address as a 128-bit number (IPv4 in the low bits).
func cfgUint128(a netip.Addr) (hi, lo uint64) {
	if a.Is4() {
		b := a.As4()
		return 0, uint64(binary.BigEndian.Uint32(b[:]))
	}
	b := a.As16()
	return binary.BigEndian.Uint64(b[:8]), binary.BigEndian.Uint64(b[8:])
}

// String is a one-line summary of the config for logs, e.g.
// "network=10.5.0.0/16 subnetlen=24 backend=vxlan".
func (c *Config) String() string {
	if c == nil {
		return "<nil>"
	}
	var parts []string
	if c.EnableIPv4 {
		parts = append(parts, "network="+c.Network.String(), "subnetlen="+strconv.Itoa(c.SubnetLen))
	}
	if c.EnableIPv6 {
		parts = append(parts, "ipv6network="+c.IPv6Network.String(), "ipv6subnetlen="+strconv.Itoa(c.IPv6SubnetLen))
	}
	parts = append(parts, "backend="+c.BackendType)
	return strings.Join(parts, " ")
}

func cfgErrorf(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrInvalidConfig}, args...)...)
}

// cfgTypeError reports a field whose JSON value has the wrong type.
func cfgTypeError(name, want string, raw json.RawMessage) error {
	return cfgErrorf("%s must be %s, got %s", name, want, cfgShowJSON(raw))
}

// cfgShowJSON quotes a JSON value for an error message, shortened.
func cfgShowJSON(raw json.RawMessage) string {
	const limit = 40
	s := string(raw)
	if len(s) > limit {
		s = s[:limit] + "..."
	}
	switch {
	case s == "":
		return "nothing"
	case s[0] == '{':
		return "object " + s
	case s[0] == '[':
		return "array " + s
	case s[0] == '"':
		return "string " + s
	}
	return s
}

// cfgKnownName returns the canonical spelling of a known top-level field
// matching name case-insensitively, or "".
func cfgKnownName(name string) string {
	for _, k := range cfgKnownFields {
		if strings.EqualFold(name, k) {
			return k
		}
	}
	return ""
}

// cfgField is one member of a JSON object, as written.
type cfgField struct {
	name string
	raw  json.RawMessage
}

// cfgObjectFields splits data, which must be exactly one JSON object, into
// its members in order. what names the object in errors.
func cfgObjectFields(data []byte, what string) ([]cfgField, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	tok, err := dec.Token()
	if err == io.EOF {
		return nil, cfgErrorf("%s is empty", what)
	}
	if err != nil {
		return nil, cfgErrorf("%s is not valid JSON: %v", what, err)
	}
	if d, ok := tok.(json.Delim); !ok || d != '{' {
		return nil, cfgErrorf("%s must be a JSON object, got %s", what, cfgTokenKind(tok))
	}
	var fields []cfgField
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, cfgErrorf("%s is not valid JSON: %v", what, err)
		}
		name, ok := tok.(string)
		if !ok {
			return nil, cfgErrorf("%s is not valid JSON: unexpected %v", what, tok)
		}
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			return nil, cfgErrorf("%s is not valid JSON: %s: %v", what, name, err)
		}
		fields = append(fields, cfgField{name: name, raw: raw})
	}
	if _, err := dec.Token(); err != nil {
		return nil, cfgErrorf("%s is not valid JSON: %v", what, err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, cfgErrorf("%s has data after its closing brace", what)
	}
	return fields, nil
}

func cfgTokenKind(tok json.Token) string {
	switch t := tok.(type) {
	case json.Delim:
		if t == '[' {
			return "an array"
		}
		return string(t)
	case string:
		return "a string"
	case bool:
		return "a boolean"
	case nil:
		return "null"
	}
	return "a number"
}

// cfgFamilyRules are the field names and length rules of one address
// family.
type cfgFamilyRules struct {
	v6                                       bool
	enable                                   string
	network, subnetLen, subnetMin, subnetMax string
	// maxNetworkLen is the longest Network; maxSubnetLen the longest
	// SubnetLen; defaultSubnetLen the SubnetLen of networks that hold four
	// of them or more (otherwise the default is the network length + 2).
	maxNetworkLen, maxSubnetLen, defaultSubnetLen int
}

var (
	cfgIPv4Rules = cfgFamilyRules{
		enable: cfgEnableIPv4, network: cfgNetwork, subnetLen: cfgSubnetLen,
		subnetMin: cfgSubnetMin, subnetMax: cfgSubnetMax,
		maxNetworkLen: 28, maxSubnetLen: 30, defaultSubnetLen: 24,
	}
	cfgIPv6Rules = cfgFamilyRules{
		v6: true, enable: cfgEnableIPv6, network: cfgIPv6Network, subnetLen: cfgIPv6SubnetLen,
		subnetMin: cfgIPv6SubnetMin, subnetMax: cfgIPv6SubnetMax,
		maxNetworkLen: 124, maxSubnetLen: 126, defaultSubnetLen: 64,
	}
)

// cfgFamily holds one family's fields: first as given (strings, 0 and ""
// meaning absent), then, after validate, with defaults applied.
type cfgFamily struct {
	networkText, minText, maxText string
	subnetLen                     int

	network, min, max netip.Prefix
}

// cfgParseFamily checks the JSON types of one family's fields.
func cfgParseFamily(r cfgFamilyRules, raw map[string]json.RawMessage) (cfgFamily, error) {
	var f cfgFamily
	for _, s := range []struct {
		name string
		dst  *string
	}{{r.network, &f.networkText}, {r.subnetMin, &f.minText}, {r.subnetMax, &f.maxText}} {
		if v, ok := raw[s.name]; ok {
			if err := json.Unmarshal(v, s.dst); err != nil {
				return f, cfgTypeError(s.name, "a string", v)
			}
		}
	}
	if v, ok := raw[r.subnetLen]; ok {
		n, err := strconv.Atoi(string(v))
		if err != nil {
			return f, cfgTypeError(r.subnetLen, "an integer prefix length", v)
		}
		f.subnetLen = n
	}
	return f, nil
}

// validate applies the defaults of docs/compatibility.md §2 and checks the
// result.
func (f *cfgFamily) validate(r cfgFamilyRules) error {
	fam := "IPv4"
	if r.v6 {
		fam = "IPv6"
	}
	if f.networkText == "" {
		return cfgErrorf("%s is required when %s is true", r.network, r.enable)
	}
	n, err := netip.ParsePrefix(f.networkText)
	if err != nil {
		return cfgErrorf("%s %q is not a CIDR", r.network, f.networkText)
	}
	if !cfgIsFamily(n.Addr(), r.v6) {
		return cfgErrorf("%s %s is not an %s CIDR", r.network, n, fam)
	}
	if n.Masked() != n {
		return cfgErrorf("%s %s is not a network address (did you mean %s?)", r.network, n, n.Masked())
	}
	if n.Bits() == 0 {
		return cfgErrorf("%s %s is the whole address space", r.network, n)
	}
	if n.Bits() > r.maxNetworkLen {
		return cfgErrorf("%s %s is too small: the longest allowed prefix is /%d", r.network, n, r.maxNetworkLen)
	}
	if sp, ok := SpecialRange(n); ok {
		return cfgErrorf("%s %s overlaps %s, %s: an overlay there would take over addresses the host needs for itself", r.network, n, sp.Prefix, sp.What)
	}
	f.network = n

	switch {
	case f.subnetLen == 0 && n.Bits() <= r.defaultSubnetLen-2:
		f.subnetLen = r.defaultSubnetLen
	case f.subnetLen == 0:
		f.subnetLen = n.Bits() + 2
	case f.subnetLen > r.maxSubnetLen:
		return cfgErrorf("%s %d is longer than /%d", r.subnetLen, f.subnetLen, r.maxSubnetLen)
	case f.subnetLen < n.Bits()+2:
		return cfgErrorf("%s %d is too short for %s %s: it must be at least /%d, for four subnets or more",
			r.subnetLen, f.subnetLen, r.network, n, n.Bits()+2)
	}

	// Defaults: the subnet after the network address's own one, and the
	// last subnet of the network.
	first := netip.PrefixFrom(n.Addr(), f.subnetLen)
	defMin := netip.PrefixFrom(cfgLastAddr(first).Next(), f.subnetLen)
	defMax := netip.PrefixFrom(cfgLastAddr(n), f.subnetLen).Masked()
	if f.min, err = f.subnet(r, r.subnetMin, f.minText, defMin); err != nil {
		return err
	}
	if f.max, err = f.subnet(r, r.subnetMax, f.maxText, defMax); err != nil {
		return err
	}
	if f.max.Addr().Less(f.min.Addr()) {
		return cfgErrorf("%s %s is after %s %s", r.subnetMin, f.min.Addr(), r.subnetMax, f.max.Addr())
	}
	return nil
}

// subnet parses SubnetMin or SubnetMax: an address, or a CIDR of length
// SubnetLen; "" and the unspecified address mean def.
func (f *cfgFamily) subnet(r cfgFamilyRules, name, text string, def netip.Prefix) (netip.Prefix, error) {
	if text == "" {
		return def, nil
	}
	fam := "IPv4"
	if r.v6 {
		fam = "IPv6"
	}
	var a netip.Addr
	if p, err := netip.ParsePrefix(text); err == nil {
		if p.Bits() != f.subnetLen {
			return netip.Prefix{}, cfgErrorf("%s %s is not a /%d: its length must be %s %d",
				name, p, f.subnetLen, r.subnetLen, f.subnetLen)
		}
		a = p.Addr()
	} else if a, err = netip.ParseAddr(text); err != nil {
		return netip.Prefix{}, cfgErrorf("%s %q is neither an address nor a CIDR", name, text)
	}
	if !cfgIsFamily(a, r.v6) || a.Zone() != "" {
		return netip.Prefix{}, cfgErrorf("%s %s is not an %s address", name, text, fam)
	}
	if a.IsUnspecified() {
		return def, nil
	}
	if !f.network.Contains(a) {
		return netip.Prefix{}, cfgErrorf("%s %s is outside %s %s", name, a, r.network, f.network)
	}
	p := netip.PrefixFrom(a, f.subnetLen)
	if p.Masked() != p {
		return netip.Prefix{}, cfgErrorf("%s %s is not aligned to %s %d (%s would be)",
			name, a, r.subnetLen, f.subnetLen, p.Masked().Addr())
	}
	return p, nil
}

// A Special is an address range that is not for an overlay network:
// routing part of it through the overlay device would take over the host's
// loopback, multicast, link-local or otherwise reserved addresses.
type Special struct {
	Prefix netip.Prefix
	What   string
}

// specialRanges are refused as (or inside, or around) an overlay network,
// IPv4 (RFC 6890) and IPv6 (RFC 4291). Private, shared (100.64.0.0/10),
// documentation and unique local ranges are fine.
var specialRanges = []Special{
	{netip.MustParsePrefix("0.0.0.0/8"), `"this network" (RFC 1122), not routable`},
	{netip.MustParsePrefix("127.0.0.0/8"), "loopback"},
	{netip.MustParsePrefix("169.254.0.0/16"), "link-local"},
	{netip.MustParsePrefix("224.0.0.0/4"), "multicast"},
	{netip.MustParsePrefix("240.0.0.0/4"), "reserved (class E and broadcast)"},
	{netip.MustParsePrefix("::/128"), "the unspecified address"},
	{netip.MustParsePrefix("::1/128"), "loopback"},
	{netip.MustParsePrefix("fe80::/10"), "link-local"},
	{netip.MustParsePrefix("ff00::/8"), "multicast"},
}

// SpecialRange returns the first special range (loopback, multicast,
// link-local, unspecified, reserved) that n overlaps: n inside it, or
// containing it.
func SpecialRange(n netip.Prefix) (Special, bool) {
	for _, sp := range specialRanges {
		if sp.Prefix.Overlaps(n) {
			return sp, true
		}
	}
	return Special{}, false
}

// cfgIsFamily reports whether a is a plain address of the family: IPv4, or
// IPv6 that is not an IPv4-mapped one.
func cfgIsFamily(a netip.Addr, v6 bool) bool {
	if v6 {
		return a.Is6() && !a.Is4In6()
	}
	return a.Is4()
}

// cfgLastAddr returns the last address of p (host bits all ones).
func cfgLastAddr(p netip.Prefix) netip.Addr {
	b := p.Masked().Addr().AsSlice()
	for i := range b {
		hostBits := max(0, min(8, (i+1)*8-p.Bits()))
		b[i] |= byte(0xff >> (8 - hostBits))
	}
	a, _ := netip.AddrFromSlice(b)
	return a
}

// cfgParseBackend checks that Backend is an object with a non-empty string
// Type, and returns the object and its Type; absent, the default.
func cfgParseBackend(raw json.RawMessage) (json.RawMessage, string, error) {
	if raw == nil {
		return json.RawMessage(cfgDefaultBackend), "vxlan", nil
	}
	if raw[0] != '{' {
		return nil, "", cfgTypeError(cfgBackend, `an object such as {"Type":"vxlan"}`, raw)
	}
	fields, err := cfgObjectFields(raw, cfgBackend)
	if err != nil {
		return nil, "", err
	}
	var typ, typName string
	for _, f := range fields {
		if !strings.EqualFold(f.name, "Type") {
			continue
		}
		if typName != "" {
			return nil, "", cfgErrorf("%s.Type is given more than once (as %q and %q)", cfgBackend, typName, f.name)
		}
		typName = f.name
		if err := json.Unmarshal(f.raw, &typ); err != nil || f.raw[0] != '"' {
			return nil, "", cfgTypeError(cfgBackend+".Type", "a string", f.raw)
		}
	}
	if typ == "" {
		return nil, "", cfgErrorf("%s.Type is missing or empty", cfgBackend)
	}
	return raw, typ, nil
}
