package subnetfile

import (
	"errors"
	"net/netip"
	"strings"
	"testing"
)

// FuzzParse checks the subnet file parser on arbitrary input: it fails only
// with ErrMalformed, a file it accepts holds a subnet, an MTU in range and
// subnets inside their networks, and what Marshal writes back for it parses
// to the same Info. Seeds are added here and under testdata/fuzz/FuzzParse/.
func FuzzParse(f *testing.F) {
	for _, s := range []string{
		"FLANNEL_NETWORK=10.5.0.0/16\nFLANNEL_SUBNET=10.5.58.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n",
		"FLANNEL_NETWORK=10.5.0.0/16\nFLANNEL_SUBNET=10.5.58.1/24\nFLANNEL_IPV6_NETWORK=fc00::/48\nFLANNEL_IPV6_SUBNET=fc00:0:0:3a::1/64\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=false\n",
		"FLANNEL_IPV6_SUBNET=fc00::1/64\nFLANNEL_MTU=1500\n",
		"# comment\n\nFLANNEL_SUBNET=\"10.5.58.1/24\"\nFLANNEL_MTU='1450'\nFLANNEL_FOO=bar\n",
		"FLANNEL_SUBNET=10.5.58.1/24\r\nFLANNEL_MTU=1450\r\n",
		"FLANNEL_NETWORK=10.6.0.0/16\nFLANNEL_SUBNET=10.5.58.1/24\nFLANNEL_MTU=1450\n",
		"FLANNEL_SUBNET=10.5.58.1/24\nFLANNEL_SUBNET=10.5.59.1/24\nFLANNEL_MTU=1450\n",
		"FLANNEL_SUBNET=10.5.58.1/24\nFLANNEL_MTU=67\n",
		"FLANNEL_SUBNET=fc00::1/64\nFLANNEL_MTU=1450\n",
		"FLANNEL_SUBNET=10.5.58.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=maybe\n",
		"FLANNEL_SUBNET 10.5.58.1/24\n",
		"=\n",
		"",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		info, err := Parse(data)
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("Parse error %v does not wrap ErrMalformed", err)
			}
			return
		}
		if !info.Subnet.IsValid() && !info.IPv6Subnet.IsValid() {
			t.Fatalf("Parse(%q) accepted a file without a subnet", data)
		}
		if info.MTU < 68 || info.MTU > 65535 {
			t.Fatalf("Parse(%q): MTU %d out of range", data, info.MTU)
		}
		for _, p := range []struct {
			sub, net netip.Prefix
			v4       bool
		}{{info.Subnet, info.Network, true}, {info.IPv6Subnet, info.IPv6Network, false}} {
			for _, q := range []netip.Prefix{p.sub, p.net} {
				if q.IsValid() && (q.Addr().Is4() != p.v4 || q.Masked() != q || q.Addr().Zone() != "") {
					t.Fatalf("Parse(%q): %v is not a masked IPv%v prefix", data, q, map[bool]int{true: 4, false: 6}[p.v4])
				}
			}
			if p.sub.IsValid() && p.net.IsValid() && !(p.net.Bits() <= p.sub.Bits() && p.net.Contains(p.sub.Addr())) {
				t.Fatalf("Parse(%q): subnet %v outside network %v", data, p.sub, p.net)
			}
		}
		// The file the agent writes for a subnet it could lease (SubnetLen
		// at most 30, IPv6 at most 126) reads back the same. Longer
		// prefixes have no first host address to write.
		if (info.Subnet.IsValid() && info.Subnet.Bits() > 30) || (info.IPv6Subnet.IsValid() && info.IPv6Subnet.Bits() > 126) {
			return
		}
		out := info.Marshal()
		again, err := Parse(out)
		if err != nil {
			t.Fatalf("Parse(%q) = %+v, whose Marshal %q does not parse: %v", data, info, out, err)
		}
		if again != info {
			t.Fatalf("Parse(%q) = %+v; Marshal then Parse = %+v", data, info, again)
		}
		// Docker's options name the same subnet.
		if info.Subnet.IsValid() && !strings.Contains(string(info.DockerOpts()), "--bip="+netip.PrefixFrom(info.Subnet.Addr().Next(), info.Subnet.Bits()).String()) {
			t.Fatalf("DockerOpts of %+v lack the bridge address:\n%s", info, info.DockerOpts())
		}
	})
}
