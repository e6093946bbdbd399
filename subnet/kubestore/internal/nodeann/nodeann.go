// Package nodeann reads and writes a lease in a Node's spec and
// annotations as flannel's kube subnet manager does: the Node's pod CIDRs
// are its subnets, annotations under a prefix (backend-type,
// backend-data, public-ip, ...) its attributes. It is the part of
// subnet/kubestore that parses input from other hosts, kept apart so that
// its tests and fuzz target build without the API server's clients.
package nodeann

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"regexp"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/netagent/netagent/subnet/kubestore/kubeinfo"
	"k8s.io/apimachinery/pkg/util/validation"

	corev1 "k8s.io/api/core/v1"

	"github.com/netagent/netagent/lease"
)

// DefaultPrefix is flannel's --kube-annotation-prefix default.
const DefaultPrefix = kubeinfo.DefaultAnnotationPrefix

// ErrInvalidPrefix is wrapped by the error of an annotation prefix that
// cannot form annotation names.
var ErrInvalidPrefix = errors.New("kubestore: invalid annotation prefix")

// prefixPattern is the form of a full prefix: a DNS name, a slash, and
// optionally a name part ending in "-" (flannel's rule).
var prefixPattern = regexp.MustCompile(`^(?:[a-z0-9_-]+\.)+[a-z0-9_-]+/(?:[a-z0-9_-]+-)?$`)

// Names are the names of the annotations a lease is published
// under, as flannel names them (pkg/subnet/kube/annotations.go).
type Names struct {
	managed, backendType, backendData, backendV6Data, publicIP, publicIPv6 string
	// publicIPOverwrite and publicIPv6Overwrite, set by an operator on a
	// Node, replace the public addresses the host publishes.
	publicIPOverwrite, publicIPv6Overwrite string
}

// New derives the names from prefix as flannel does: a prefix
// without a slash gets one ("example.com" → "example.com/backend-type"), a
// prefix with a name part gets a "-" ("example.com/net" →
// "example.com/net-backend-type").
func New(prefix string) (Names, error) {
	p := prefix
	switch strings.Count(p, "/") {
	case 0:
		p += "/"
	case 1:
	default:
		return Names{}, fmt.Errorf("%w %q: more than one slash", ErrInvalidPrefix, prefix)
	}
	if !strings.HasSuffix(p, "/") && !strings.HasSuffix(p, "-") {
		p += "-"
	}
	if !prefixPattern.MatchString(p) {
		return Names{}, fmt.Errorf("%w %q: want a DNS name, optionally /name", ErrInvalidPrefix, prefix)
	}
	// The longest name must still be one the API server accepts (a DNS
	// subdomain of at most 253 characters, a name part of at most 63).
	if name := p + "public-ipv6-overwrite"; len(validation.IsQualifiedName(name)) > 0 {
		return Names{}, fmt.Errorf("%w %q: %s is not a valid annotation name: %s", ErrInvalidPrefix, prefix, name,
			strings.Join(validation.IsQualifiedName(name), "; "))
	}
	return Names{
		managed:             p + "kube-subnet-manager",
		backendType:         p + "backend-type",
		backendData:         p + "backend-data",
		backendV6Data:       p + "backend-v6-data",
		publicIP:            p + "public-ip",
		publicIPv6:          p + "public-ipv6",
		publicIPOverwrite:   p + "public-ip-overwrite",
		publicIPv6Overwrite: p + "public-ipv6-overwrite",
	}, nil
}

// PodCIDRs returns the Node's IPv4 and IPv6 pod subnets (spec.podCIDRs,
// or spec.podCIDR when that is empty); either is invalid when absent.
func PodCIDRs(n *corev1.Node) (v4, v6 netip.Prefix, err error) {
	cidrs := n.Spec.PodCIDRs
	if len(cidrs) == 0 && n.Spec.PodCIDR != "" {
		cidrs = []string{n.Spec.PodCIDR}
	}
	if len(cidrs) > 2 {
		return v4, v6, fmt.Errorf("node %s has %d pod CIDRs, want one per address family", n.Name, len(cidrs))
	}
	for _, s := range cidrs {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return netip.Prefix{}, netip.Prefix{}, fmt.Errorf("node %s: pod CIDR: %w", n.Name, err)
		}
		if p != p.Masked() {
			return netip.Prefix{}, netip.Prefix{}, fmt.Errorf("node %s: pod CIDR %s is not a network address", n.Name, s)
		}
		// An IPv4-mapped IPv6 prefix would be a lease key no store
		// reads back.
		if p.Addr().Is4In6() {
			return netip.Prefix{}, netip.Prefix{}, fmt.Errorf("node %s: pod CIDR %s is an IPv4-mapped IPv6 prefix", n.Name, s)
		}
		fam := &v6
		if p.Addr().Is4() {
			fam = &v4
		}
		if fam.IsValid() {
			return netip.Prefix{}, netip.Prefix{}, fmt.Errorf("node %s: pod CIDRs %s and %s are of one address family", n.Name, *fam, p)
		}
		*fam = p
	}
	return v4, v6, nil
}

// Lease turns a Node into the lease it publishes, with the subnets
// and attributes of the families cfg enables, as flannel reads it. ok is
// false when the Node publishes none (no kube-subnet-manager "true"), and
// err says why a Node that claims to publish one is unusable.
func (a *Names) Lease(n *corev1.Node, cfg *lease.Config) (l lease.Lease, ok bool, err error) {
	if n.Annotations[a.managed] != "true" {
		return l, false, nil
	}
	v4, v6, err := PodCIDRs(n)
	if err != nil {
		return l, true, err
	}
	// The attributes are read as the etcd store reads a lease value, with
	// the same checks (addresses, size, UTF-8, JSON). Annotations must be
	// UTF-8 already: encoding/json would replace what is not, publishing
	// something other than what the Node says.
	for _, k := range []string{a.backendType, a.backendData, a.backendV6Data, a.publicIP, a.publicIPv6} {
		if !utf8.ValidString(n.Annotations[k]) {
			return l, true, fmt.Errorf("node %s: %w: annotation %s is not UTF-8", n.Name, lease.ErrMalformedLease, k)
		}
	}
	attrs := map[string]any{"BackendType": n.Annotations[a.backendType]}
	// Each enabled family: its subnet, its public address and backend
	// data (as the lease value's fields).
	for _, f := range []struct {
		enabled            bool
		name               string
		cidr               netip.Prefix
		subnet             *netip.Prefix
		publicIP, data     string
		publicAnn, dataAnn string
	}{
		{cfg.EnableIPv4, "IPv4", v4, &l.Subnet, "PublicIP", "BackendData", a.publicIP, a.backendData},
		{cfg.EnableIPv6, "IPv6", v6, &l.IPv6Subnet, "PublicIPv6", "BackendV6Data", a.publicIPv6, a.backendV6Data},
	} {
		if !f.enabled {
			continue
		}
		if !f.cidr.IsValid() {
			return l, true, fmt.Errorf("node %s has no %s pod CIDR", n.Name, f.name)
		}
		*f.subnet = f.cidr
		attrs[f.publicIP] = n.Annotations[f.publicAnn]
		if d := n.Annotations[f.dataAnn]; d != "" {
			attrs[f.data] = json.RawMessage(d)
		}
	}
	value, err := json.Marshal(attrs)
	if err != nil {
		return l, true, fmt.Errorf("node %s: %w: %v", n.Name, lease.ErrMalformedLease, err)
	}
	// CreateRevision orders claims on one subnet by age, as an etcd key's
	// create revision does: the Node's creation time, in seconds.
	if l.Attrs, err = lease.ParseLeaseAttrs(value); err != nil {
		return l, true, fmt.Errorf("node %s: %w", n.Name, err)
	}
	if !n.CreationTimestamp.IsZero() {
		l.CreateRevision = n.CreationTimestamp.Unix()
	}
	l.ModRevision = ResourceVersion(n)
	return l, true, nil
}

// ResourceVersion is the Node's resourceVersion as a number: on an API
// server backed by etcd it is the etcd revision of its last write. It is
// 0 if the server uses another form.
func ResourceVersion(n *corev1.Node) int64 {
	rv, err := strconv.ParseInt(n.ResourceVersion, 10, 64)
	if err != nil {
		return 0
	}
	return rv
}

// unsetPublicIP is what flannel writes as the public-ip of a host without
// an IPv4 address.
const unsetPublicIP = "0.0.0.0"

// Want returns the annotations this host publishes for attrs, as flannel
// writes them (AcquireLease): backend-type and kube-subnet-manager always;
// backend-data (its JSON, "null" when the backend has none) and public-ip
// unless the backend is vxlan without IPv4 data; backend-v6-data and
// public-ipv6 when the host has an IPv6 public address. An overwrite
// annotation on the Node replaces the public address published.
func (a *Names) Want(n *corev1.Node, attrs lease.LeaseAttrs) map[string]string {
	m := map[string]string{
		a.managed:     "true",
		a.backendType: attrs.BackendType,
	}
	data, dataV6 := rawOrNull(attrs.BackendData), rawOrNull(attrs.BackendV6Data)
	if attrs.BackendType != "vxlan" || data != "null" {
		m[a.backendData] = data
		m[a.publicIP] = unsetPublicIP
		if attrs.PublicIP.IsValid() {
			m[a.publicIP] = attrs.PublicIP.String()
		}
		if o := n.Annotations[a.publicIPOverwrite]; o != "" {
			m[a.publicIP] = o
		}
	}
	if attrs.PublicIPv6.IsValid() && (attrs.BackendType != "vxlan" || dataV6 != "null") {
		m[a.backendV6Data] = dataV6
		m[a.publicIPv6] = attrs.PublicIPv6.String()
		if o := n.Annotations[a.publicIPv6Overwrite]; o != "" {
			m[a.publicIPv6] = o
		}
	}
	return m
}

func rawOrNull(r json.RawMessage) string {
	if len(r) == 0 {
		return "null"
	}
	return string(r)
}

// Diff returns the annotations of want whose value on n differs: what a
// patch must write (nil when none).
func Diff(n *corev1.Node, want map[string]string) map[string]string {
	var d map[string]string
	for k, v := range want {
		if cur, ok := n.Annotations[k]; !ok || cur != v {
			if d == nil {
				d = make(map[string]string)
			}
			d[k] = v
		}
	}
	return d
}

// SameLease reports whether a and b publish the same thing: subnets,
// attributes and age. Revisions differ with every write to a Node.
func SameLease(a, b *lease.Lease) bool {
	return a.Subnet == b.Subnet && a.IPv6Subnet == b.IPv6Subnet &&
		a.CreateRevision == b.CreateRevision &&
		a.Attrs.PublicIP == b.Attrs.PublicIP && a.Attrs.PublicIPv6 == b.Attrs.PublicIPv6 &&
		a.Attrs.BackendType == b.Attrs.BackendType &&
		bytes.Equal(a.Attrs.BackendData, b.Attrs.BackendData) &&
		bytes.Equal(a.Attrs.BackendV6Data, b.Attrs.BackendV6Data)
}
