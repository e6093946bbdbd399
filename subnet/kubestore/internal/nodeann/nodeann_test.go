package nodeann

import (
	"encoding/json"
	"errors"
	"net/netip"
	"reflect"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/netagent/netagent/lease"
)

func TestAnnotationNames(t *testing.T) {
	for _, tc := range []struct {
		prefix, backendType string
	}{
		{"flannel.alpha.coreos.com", "flannel.alpha.coreos.com/backend-type"},
		{"flannel.alpha.coreos.com/", "flannel.alpha.coreos.com/backend-type"},
		{"example.com/net", "example.com/net-backend-type"},
		{"example.com/net-", "example.com/net-backend-type"},
	} {
		a, err := New(tc.prefix)
		if err != nil {
			t.Errorf("%q: %v", tc.prefix, err)
			continue
		}
		if a.backendType != tc.backendType {
			t.Errorf("%q: backend-type annotation %q, want %q", tc.prefix, a.backendType, tc.backendType)
		}
	}
	// The last: a name part that leaves no room for "-public-ipv6-overwrite"
	// within the API server's 63 characters.
	for _, bad := range []string{"a.com/b/c", "Example.com", "nodots", "example.com/ne t", "", "example.com/" + strings.Repeat("n", 50)} {
		if _, err := New(bad); !errors.Is(err, ErrInvalidPrefix) {
			t.Errorf("%q: err %v, want ErrInvalidPrefix", bad, err)
		}
	}
}

const (
	vtepData   = `{"VNI":1,"VtepMAC":"3e:5b:b9:8d:d6:4d"}`
	vtepDataV6 = `{"VNI":1,"VtepMAC":"3e:5b:b9:8d:d6:4e"}`
)

// TestWant checks the annotations a host publishes against what flannel
// writes for the same lease (pkg/subnet/kube/kube.go, AcquireLease).
func TestWant(t *testing.T) {
	a, _ := New(DefaultPrefix)
	p := "flannel.alpha.coreos.com/"
	v4, v6 := netip.MustParseAddr("192.168.77.12"), netip.MustParseAddr("fd00::12")
	for _, tc := range []struct {
		name  string
		node  map[string]string
		attrs lease.LeaseAttrs
		want  map[string]string
	}{{
		name:  "vxlan",
		attrs: lease.LeaseAttrs{PublicIP: v4, BackendType: "vxlan", BackendData: json.RawMessage(vtepData)},
		want: map[string]string{p + "kube-subnet-manager": "true", p + "backend-type": "vxlan",
			p + "backend-data": vtepData, p + "public-ip": "192.168.77.12"},
	}, {
		name:  "host-gw writes null data",
		attrs: lease.LeaseAttrs{PublicIP: v4, BackendType: "host-gw"},
		want: map[string]string{p + "kube-subnet-manager": "true", p + "backend-type": "host-gw",
			p + "backend-data": "null", p + "public-ip": "192.168.77.12"},
	}, {
		name: "vxlan dual stack",
		attrs: lease.LeaseAttrs{PublicIP: v4, PublicIPv6: v6, BackendType: "vxlan",
			BackendData: json.RawMessage(vtepData), BackendV6Data: json.RawMessage(vtepDataV6)},
		want: map[string]string{p + "kube-subnet-manager": "true", p + "backend-type": "vxlan",
			p + "backend-data": vtepData, p + "public-ip": "192.168.77.12",
			p + "backend-v6-data": vtepDataV6, p + "public-ipv6": "fd00::12"},
	}, {
		name:  "vxlan IPv6 only",
		attrs: lease.LeaseAttrs{PublicIPv6: v6, BackendType: "vxlan", BackendV6Data: json.RawMessage(vtepDataV6)},
		want: map[string]string{p + "kube-subnet-manager": "true", p + "backend-type": "vxlan",
			p + "backend-v6-data": vtepDataV6, p + "public-ipv6": "fd00::12"},
	}, {
		name:  "public-ip-overwrite",
		node:  map[string]string{p + "public-ip-overwrite": "203.0.113.7"},
		attrs: lease.LeaseAttrs{PublicIP: v4, BackendType: "host-gw"},
		want: map[string]string{p + "kube-subnet-manager": "true", p + "backend-type": "host-gw",
			p + "backend-data": "null", p + "public-ip": "203.0.113.7"},
	}} {
		n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "n", Annotations: tc.node}}
		if got := a.Want(n, tc.attrs); !reflect.DeepEqual(got, tc.want) {
			t.Errorf("%s: annotations\n%v\nwant\n%v", tc.name, got, tc.want)
		}
	}
}

func TestNodeLease(t *testing.T) {
	a, _ := New(DefaultPrefix)
	p := "flannel.alpha.coreos.com/"
	v4cfg := &lease.Config{EnableIPv4: true}
	dual := &lease.Config{EnableIPv4: true, EnableIPv6: true}
	flannelV4 := map[string]string{p + "kube-subnet-manager": "true", p + "backend-type": "vxlan",
		p + "backend-data": vtepData, p + "public-ip": "192.168.77.12"}
	with := func(m map[string]string, k, v string) map[string]string {
		c := make(map[string]string, len(m)+1)
		for mk, mv := range m {
			c[mk] = mv
		}
		if v == "" {
			delete(c, k)
		} else {
			c[k] = v
		}
		return c
	}
	for _, tc := range []struct {
		name        string
		annotations map[string]string
		cidrs       []string
		cfg         *lease.Config
		ok, err     bool
		want        lease.Lease
	}{{
		name: "flannel vxlan", annotations: flannelV4, cidrs: []string{"10.244.1.0/24"}, cfg: v4cfg, ok: true,
		want: lease.Lease{Subnet: netip.MustParsePrefix("10.244.1.0/24"), Attrs: lease.LeaseAttrs{
			PublicIP: netip.MustParseAddr("192.168.77.12"), BackendType: "vxlan", BackendData: json.RawMessage(vtepData)}},
	}, {
		name: "dual-stack node on an IPv4 network", annotations: flannelV4, cidrs: []string{"10.244.1.0/24", "fd00:1::/64"}, cfg: v4cfg, ok: true,
		want: lease.Lease{Subnet: netip.MustParsePrefix("10.244.1.0/24"), Attrs: lease.LeaseAttrs{
			PublicIP: netip.MustParseAddr("192.168.77.12"), BackendType: "vxlan", BackendData: json.RawMessage(vtepData)}},
	}, {
		name:        "dual stack",
		annotations: with(with(flannelV4, p+"public-ipv6", "fd00::12"), p+"backend-v6-data", vtepDataV6),
		cidrs:       []string{"10.244.1.0/24", "fd00:1::/64"}, cfg: dual, ok: true,
		want: lease.Lease{Subnet: netip.MustParsePrefix("10.244.1.0/24"), IPv6Subnet: netip.MustParsePrefix("fd00:1::/64"),
			Attrs: lease.LeaseAttrs{PublicIP: netip.MustParseAddr("192.168.77.12"), PublicIPv6: netip.MustParseAddr("fd00::12"),
				BackendType: "vxlan", BackendData: json.RawMessage(vtepData), BackendV6Data: json.RawMessage(vtepDataV6)}},
	}, {
		name: "not managed", annotations: with(flannelV4, p+"kube-subnet-manager", ""), cidrs: []string{"10.244.1.0/24"}, cfg: v4cfg,
	}, {
		name: "managed false", annotations: with(flannelV4, p+"kube-subnet-manager", "false"), cidrs: []string{"10.244.1.0/24"}, cfg: v4cfg,
	}, {
		name: "no pod CIDR", annotations: flannelV4, cfg: v4cfg, ok: true, err: true,
	}, {
		name: "no IPv6 pod CIDR", annotations: flannelV4, cidrs: []string{"10.244.1.0/24"}, cfg: dual, ok: true, err: true,
	}, {
		name: "bad public-ip", annotations: with(flannelV4, p+"public-ip", "127.0.0.1"), cidrs: []string{"10.244.1.0/24"}, cfg: v4cfg, ok: true, err: true,
	}, {
		name: "bad backend-data", annotations: with(flannelV4, p+"backend-data", "{"), cidrs: []string{"10.244.1.0/24"}, cfg: v4cfg, ok: true, err: true,
	}, {
		name: "pod CIDR with host bits", annotations: flannelV4, cidrs: []string{"10.244.1.1/24"}, cfg: v4cfg, ok: true, err: true,
	}} {
		n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "n", Annotations: tc.annotations}, Spec: corev1.NodeSpec{PodCIDRs: tc.cidrs}}
		if len(tc.cidrs) > 0 {
			n.Spec.PodCIDR = tc.cidrs[0]
		}
		l, ok, err := a.Lease(n, tc.cfg)
		if ok != tc.ok || (err != nil) != tc.err {
			t.Errorf("%s: ok %v err %v, want ok %v, error %v", tc.name, ok, err, tc.ok, tc.err)
			continue
		}
		if tc.ok && !tc.err && !SameLease(&l, &tc.want) {
			t.Errorf("%s: lease %+v, want %+v", tc.name, l, tc.want)
		}
	}
}
