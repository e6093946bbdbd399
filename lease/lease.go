package lease

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// MaxLeaseValueSize bounds the size of a lease value read from the store.
// Real values are about 150 bytes; anything this large is refused.
const MaxLeaseValueSize = 8 << 10

// ErrMalformedLease is wrapped by every error about a lease key or value that
// cannot be understood.
var ErrMalformedLease = errors.New("subnet: malformed lease")

// LeaseAttrs is the JSON value stored under a lease key, as flannel writes it:
//
//	{"PublicIP":"192.168.77.12","PublicIPv6":null,"BackendType":"vxlan",
//	 "BackendData":{"VNI":1,"VtepMAC":"3e:5b:b9:8d:d6:4d"}}
type LeaseAttrs struct {
	// PublicIP is the host's IPv4 underlay address; invalid on an
	// IPv6-only host.
	PublicIP netip.Addr
	// PublicIPv6 is the host's IPv6 underlay address, or invalid.
	PublicIPv6 netip.Addr
	// BackendType is the config's Backend.Type string ("vxlan", "host-gw").
	BackendType string
	// BackendData and BackendV6Data are backend specific (for vxlan: VNI and
	// VtepMAC); nil when absent.
	BackendData   json.RawMessage
	BackendV6Data json.RawMessage
}

// Lease is one host's subnet lease.
type Lease struct {
	// Subnet is the IPv4 subnet; invalid when the lease is IPv6-only.
	Subnet netip.Prefix
	// IPv6Subnet is the IPv6 subnet; invalid when the lease is IPv4-only.
	IPv6Subnet netip.Prefix
	Attrs      LeaseAttrs
	// Reservation is true for a key with no etcd lease attached: it never
	// expires and belongs to the host whose PublicIP it names.
	Reservation bool
	// Expiration is when the etcd lease runs out, when known; zero for
	// reservations and for leases whose TTL was not asked for.
	Expiration time.Time
	// CreateRevision and ModRevision are the key's etcd revisions.
	CreateRevision int64
	ModRevision    int64
}

// Key returns the lease's key relative to <prefix>/subnets/, e.g.
// "10.5.58.0-24" or "10.5.58.0-24&fc00:0:0:3a::-64".
func (l *Lease) Key() string { return LeaseKey(l.Subnet, l.IPv6Subnet) }

// String is the lease's key, for logs.
func (l *Lease) String() string { return l.Key() }

// LeaseKey formats the key of a lease for the given subnets; either may be
// invalid, not both.
func LeaseKey(v4, v6 netip.Prefix) string {
	var parts []string
	if v4.IsValid() {
		parts = append(parts, v4.Masked().Addr().String()+"-"+strconv.Itoa(v4.Bits()))
	}
	if v6.IsValid() {
		parts = append(parts, v6.Masked().Addr().String()+"-"+strconv.Itoa(v6.Bits()))
	}
	return strings.Join(parts, "&")
}

// ParseLeaseKey parses a key relative to <prefix>/subnets/ into its IPv4 and
// IPv6 subnets. Accepted forms: "<v4>-<len>", "<v6>-<len>" and
// "<v4>-<len>&<v6>-<len>". The address must be the subnet's network address.
func ParseLeaseKey(key string) (v4, v6 netip.Prefix, err error) {
	parts := strings.Split(key, "&")
	if len(parts) > 2 {
		return v4, v6, fmt.Errorf("%w: key %q: more than two subnets", ErrMalformedLease, key)
	}
	for _, part := range parts {
		p, err := parseKeyPart(part)
		if err != nil {
			return netip.Prefix{}, netip.Prefix{}, fmt.Errorf("%w: key %q: %v", ErrMalformedLease, key, err)
		}
		switch {
		case p.Addr().Is4() && !v4.IsValid() && !v6.IsValid():
			v4 = p
		case p.Addr().Is6() && !v6.IsValid():
			v6 = p
		default:
			return netip.Prefix{}, netip.Prefix{}, fmt.Errorf("%w: key %q: expected <ipv4>-<len>[&<ipv6>-<len>]", ErrMalformedLease, key)
		}
	}
	return v4, v6, nil
}

func parseKeyPart(s string) (netip.Prefix, error) {
	i := strings.LastIndexByte(s, '-')
	if i < 0 {
		return netip.Prefix{}, fmt.Errorf("%q has no -<len>", s)
	}
	addr, err := netip.ParseAddr(s[:i])
	if err != nil {
		return netip.Prefix{}, err
	}
	if addr.Zone() != "" || addr.Is4In6() {
		return netip.Prefix{}, fmt.Errorf("%q is not a plain address", s[:i])
	}
	// Only the canonical spelling is a key: "FC00::-64" and "fc00:0::-64"
	// would name the subnet of "fc00::-64" under another key, escaping the
	// create-if-absent guard, and Lease.Key would not name the stored key.
	if addr.String() != s[:i] {
		return netip.Prefix{}, fmt.Errorf("%q is not written in canonical form %s", s[:i], addr)
	}
	bits, err := strconv.Atoi(s[i+1:])
	if err != nil || bits < 0 || bits > addr.BitLen() || s[i+1:] != strconv.Itoa(bits) {
		return netip.Prefix{}, fmt.Errorf("bad prefix length %q", s[i+1:])
	}
	p := netip.PrefixFrom(addr, bits)
	if p.Masked() != p {
		return netip.Prefix{}, fmt.Errorf("%s is not the network address of %s", addr, p.Masked())
	}
	return p, nil
}

type leaseAttrsJSON struct {
	PublicIP      *string         `json:"PublicIP"`
	PublicIPv6    *string         `json:"PublicIPv6"`
	BackendType   string          `json:"BackendType,omitempty"`
	BackendData   json.RawMessage `json:"BackendData,omitempty"`
	BackendV6Data json.RawMessage `json:"BackendV6Data,omitempty"`
}

// unsetPublicIP is how flannel writes the PublicIP of an IPv6-only host:
// its lease type has no null for it, and a flannel host fails to read a
// lease whose PublicIP is null.
const unsetPublicIP = "0.0.0.0"

// MarshalJSON writes the attributes in flannel's layout: PublicIP always
// present ("0.0.0.0" when unset, as flannel writes it), PublicIPv6 always
// present (null when unset), the rest omitted when empty.
func (a LeaseAttrs) MarshalJSON() ([]byte, error) {
	var j leaseAttrsJSON
	s := unsetPublicIP
	if a.PublicIP.IsValid() {
		s = a.PublicIP.String()
	}
	j.PublicIP = &s
	if a.PublicIPv6.IsValid() {
		s := a.PublicIPv6.String()
		j.PublicIPv6 = &s
	}
	j.BackendType = a.BackendType
	j.BackendData = compactRaw(a.BackendData)
	j.BackendV6Data = compactRaw(a.BackendV6Data)
	return json.Marshal(j)
}

func compactRaw(r json.RawMessage) json.RawMessage {
	if len(r) == 0 || string(r) == "null" {
		return nil
	}
	if bytes.IndexAny(r, " \t\r\n") < 0 {
		// Compact already (as flannel and netagent write it): spare
		// a copy per lease.
		return r
	}
	var b bytes.Buffer
	if json.Compact(&b, r) != nil {
		return r
	}
	return b.Bytes()
}

// ParseLeaseAttrs parses a lease value written by netagent or flannel. It
// refuses oversized and non-UTF-8 values, addresses of the wrong family and
// a value with neither public address.
func ParseLeaseAttrs(data []byte) (LeaseAttrs, error) {
	var a LeaseAttrs
	if len(data) > MaxLeaseValueSize {
		return a, fmt.Errorf("%w: value of %d bytes exceeds %d", ErrMalformedLease, len(data), MaxLeaseValueSize)
	}
	if !utf8.Valid(data) {
		return a, fmt.Errorf("%w: value is not UTF-8", ErrMalformedLease)
	}
	var j leaseAttrsJSON
	if !decodeCanonicalAttrs(data, &j) {
		j = leaseAttrsJSON{}
		if err := json.Unmarshal(data, &j); err != nil {
			return a, fmt.Errorf("%w: %v", ErrMalformedLease, err)
		}
	}
	var err error
	if a.PublicIP, err = parsePublicIP(j.PublicIP, "PublicIP", true); err != nil {
		return a, err
	}
	if a.PublicIPv6, err = parsePublicIP(j.PublicIPv6, "PublicIPv6", false); err != nil {
		return a, err
	}
	if !a.PublicIP.IsValid() && !a.PublicIPv6.IsValid() {
		return a, fmt.Errorf("%w: neither PublicIP nor PublicIPv6 is set", ErrMalformedLease)
	}
	a.BackendType = j.BackendType
	a.BackendData = compactRaw(j.BackendData)
	a.BackendV6Data = compactRaw(j.BackendV6Data)
	return a, nil
}

func parsePublicIP(s *string, field string, v4 bool) (netip.Addr, error) {
	if s == nil || *s == "" {
		return netip.Addr{}, nil
	}
	addr, err := netip.ParseAddr(*s)
	if err != nil {
		return netip.Addr{}, fmt.Errorf("%w: %s: %v", ErrMalformedLease, field, err)
	}
	addr = addr.Unmap()
	if addr.IsUnspecified() && addr.Is4() == v4 {
		// flannel's "0.0.0.0" (and "::") for an address a host does not have.
		return netip.Addr{}, nil
	}
	if addr.Is4() != v4 || addr.Zone() != "" {
		return netip.Addr{}, fmt.Errorf("%w: %s %q is not an IPv%s address", ErrMalformedLease, field, *s, map[bool]string{true: "4", false: "6"}[v4])
	}
	if addr.IsLoopback() || addr.IsMulticast() || addr.IsUnspecified() || addr == netip.AddrFrom4([4]byte{255, 255, 255, 255}) {
		return netip.Addr{}, fmt.Errorf("%w: %s %s is not a unicast host address", ErrMalformedLease, field, addr)
	}
	return addr, nil
}

// EventType says whether a lease appeared (or changed) or went away.
type EventType int

const (
	// EventAdded is a lease that is new or whose value changed.
	EventAdded EventType = iota
	// EventRemoved is a lease whose key was deleted or expired.
	EventRemoved
)

func (t EventType) String() string {
	if t == EventRemoved {
		return "removed"
	}
	return "added"
}

// Event is one change to the set of leases.
type Event struct {
	Type EventType
	// Lease is the lease after the change; for EventRemoved only its
	// subnets are meaningful.
	Lease Lease
}

// Batch is what a lease watch delivers.
type Batch struct {
	// Snapshot is true when Events is the complete set of current leases
	// (all EventAdded), replacing whatever the receiver knew. The first
	// batch of a watch is always a snapshot.
	Snapshot bool
	Events   []Event
	// Revision is the store revision the batch brings the receiver to.
	Revision int64
}
