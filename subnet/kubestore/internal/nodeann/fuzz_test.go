package nodeann

import (
	"bytes"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/netagent/netagent/lease"
)

// FuzzNodeLease checks the reading of other hosts' Nodes, input from
// outside like the etcd store's lease keys and values: whatever the
// annotations under the prefix and the pod CIDR strings, Lease does
// not panic, and a lease it accepts keeps the invariants the etcd store
// enforces on what it reads (lease.ParseLeaseKey of its key,
// lease.ParseLeaseAttrs of its value) and has the subnets of exactly the
// families the config enables.
func FuzzNodeLease(f *testing.F) {
	f.Add(true, false, "true", "vxlan", vtepData, "", "192.168.77.12", "", "10.244.1.0/24", "10.244.1.0/24", "", "")
	f.Add(true, true, "true", "vxlan", vtepData, vtepDataV6, "192.168.77.12", "fd00::12", "10.244.1.0/24", "10.244.1.0/24,fd00:10:244:1::/64", "", "")
	f.Add(false, true, "true", "host-gw", "null", "null", "", "fd00::12", "", "fd00:10:244:1::/64", "", "")
	f.Add(true, false, "true", "vxlan", vtepData, "", "192.168.77.12", "", "", "10.244.1.0/24,10.244.2.0/24", "", "")
	f.Add(false, true, "true", "vxlan", "", vtepDataV6, "", "fd00::12", "", "::ffff:10.244.1.0/120", "", "")
	f.Add(true, false, "true", "vxlan", `{"VNI":}`, "", "192.168.77.12", "", "10.244.1.1/24", "", "", "")
	f.Add(true, false, "true", "vxlan", vtepData, "", "::ffff:192.168.77.12", "", "10.244.1.0/24", "", "public-ip-overwrite", "10.0.0.1")
	f.Add(true, false, "false", "vxlan", vtepData, "", "192.168.77.12", "", "10.244.1.0/24", "", "", "")
	f.Add(true, true, "true", "", "", "", "0.0.0.0", "", "10.244.1.0/24", "fd00::/64,10.244.1.0/24,fd00:1::/64", "", "")
	f.Fuzz(func(t *testing.T, v4, v6 bool, managed, backendType, data, dataV6, publicIP, publicIPv6, podCIDR, podCIDRs, extraName, extraValue string) {
		cfg := fuzzConfig(t, v4, v6)
		a, err := New(DefaultPrefix)
		if err != nil {
			t.Fatal(err)
		}
		n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "peer", ResourceVersion: "42", Annotations: map[string]string{}}}
		for name, v := range map[string]string{
			a.managed: managed, a.backendType: backendType, a.backendData: data, a.backendV6Data: dataV6,
			a.publicIP: publicIP, a.publicIPv6: publicIPv6, DefaultPrefix + "/" + extraName: extraValue,
		} {
			if v != "" {
				n.Annotations[name] = v
			}
		}
		n.Spec.PodCIDR = podCIDR
		if podCIDRs != "" {
			n.Spec.PodCIDRs = strings.Split(podCIDRs, ",")
		}

		l, ok, err := a.Lease(n, cfg)
		if !ok {
			if err != nil || managed == "true" {
				t.Fatalf("nodeLease = not published, %v, with kube-subnet-manager %q", err, managed)
			}
			return
		}
		if managed != "true" {
			t.Fatalf("nodeLease published a lease of a Node with kube-subnet-manager %q", managed)
		}
		if err != nil {
			if !strings.Contains(err.Error(), "node peer") {
				t.Fatalf("error %v does not name the Node", err)
			}
			return
		}
		// The subnets: one per enabled family, of that family, network
		// addresses, written under a key the etcd store would read back.
		if l.Subnet.IsValid() != cfg.EnableIPv4 || l.IPv6Subnet.IsValid() != cfg.EnableIPv6 {
			t.Fatalf("lease %v of a config enabling IPv4 %v, IPv6 %v", l.Key(), cfg.EnableIPv4, cfg.EnableIPv6)
		}
		k4, k6, err := lease.ParseLeaseKey(l.Key())
		if err != nil || k4 != l.Subnet || k6 != l.IPv6Subnet {
			t.Fatalf("lease of subnets %v, %v: its key %q reads back as %v, %v, %v", l.Subnet, l.IPv6Subnet, l.Key(), k4, k6, err)
		}
		// The attributes: as the etcd store reads a lease value, and read
		// back the same from the value it would store.
		if l.Attrs.BackendType != backendType {
			t.Fatalf("backend type %q, annotation %q", l.Attrs.BackendType, backendType)
		}
		value, err := l.Attrs.MarshalJSON()
		if err != nil {
			t.Fatalf("attributes %+v do not marshal: %v", l.Attrs, err)
		}
		back, err := lease.ParseLeaseAttrs(value)
		if err != nil {
			t.Fatalf("value %s of an accepted lease does not parse: %v", value, err)
		}
		if back.PublicIP != l.Attrs.PublicIP || back.PublicIPv6 != l.Attrs.PublicIPv6 || back.BackendType != l.Attrs.BackendType ||
			!bytes.Equal(back.BackendData, l.Attrs.BackendData) || !bytes.Equal(back.BackendV6Data, l.Attrs.BackendV6Data) {
			t.Fatalf("value %s reads back as %+v, not %+v", value, back, l.Attrs)
		}
		// A family the config does not enable publishes nothing.
		if !cfg.EnableIPv4 && (l.Attrs.PublicIP.IsValid() || l.Attrs.BackendData != nil) ||
			!cfg.EnableIPv6 && (l.Attrs.PublicIPv6.IsValid() || l.Attrs.BackendV6Data != nil) {
			t.Fatalf("lease %v of a config enabling IPv4 %v, IPv6 %v has attributes %+v", l.Key(), cfg.EnableIPv4, cfg.EnableIPv6, l.Attrs)
		}
	})
}

// fuzzConfig is a network config enabling the families given (IPv4 when
// neither).
func fuzzConfig(t *testing.T, v4, v6 bool) *lease.Config {
	t.Helper()
	conf := `{"EnableIPv4":true,"Network":"10.244.0.0/16","Backend":{"Type":"vxlan"}}`
	switch {
	case v4 && v6:
		conf = `{"EnableIPv4":true,"Network":"10.244.0.0/16","EnableIPv6":true,"IPv6Network":"fd00:10:244::/56","Backend":{"Type":"vxlan"}}`
	case v6:
		conf = `{"EnableIPv4":false,"EnableIPv6":true,"IPv6Network":"fd00:10:244::/56","Backend":{"Type":"vxlan"}}`
	}
	cfg, err := lease.ParseConfig([]byte(conf))
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}
