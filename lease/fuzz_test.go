package lease

import (
	"bytes"
	"encoding/json"
	"errors"
	"net/netip"
	"reflect"
	"strconv"
	"strings"
	"testing"
)

// The fuzzers check properties of the parsers of input that comes from
// outside (the network config, other hosts' lease keys and values), not
// only that they do not panic. Seeds are added here and under
// testdata/fuzz/<FuzzName>/.

func FuzzParseConfig(f *testing.F) {
	for _, s := range []string{
		`{"Network":"10.5.0.0/16"}`,
		`{"Network":"10.5.0.0/16","SubnetLen":20,"SubnetMin":"10.5.16.0","SubnetMax":"10.5.224.0/20"}`,
		`{"Network":"10.5.0.0/28","Backend":{"Type":"host-gw"}}`,
		`{"network":"10.5.0.0/23","subnetlen":0,"subnetmin":"0.0.0.0","backend":{"type":"vxlan","VNI":4096}}`,
		`{"Network":"10.5.0.0/16","EnableIPv6":true,"IPv6Network":"fc00::/48","IPv6SubnetLen":80}`,
		`{"EnableIPv4":false,"EnableIPv6":true,"IPv6Network":"fc00::/120","IPv6SubnetMin":"fc00::40"}`,
		`{"EnableIPv4":false,"EnableIPv6":true,"IPv6Network":"8000::/1","IPv6SubnetLen":126}`,
		`{"Network":"10.5.1.0/16"}`,
		`{"Network":"10.5.0.0/16","SubnetMin":"10.5.200.0","SubnetMax":"10.5.100.0"}`,
		`{"Network":"10.5.0.0/16","Network":"10.6.0.0/16"}`,
		`{"Network":"10.5.0.0/16","Backend":"vxlan"}`,
		`{"Network":"10.5.0.0/16"} {}`,
		`{"Network":"127.0.0.0/8"}`,
		`{"Network":"224.0.0.0/4","Backend":{"Type":"vxlan"}}`,
		`{"EnableIPv4":false,"EnableIPv6":true,"IPv6Network":"fe80::/64"}`,
		`[]`,
		``,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := ParseConfig(data)
		_ = UnknownConfigFields(data)
		if err != nil {
			if c != nil || !errors.Is(err, ErrInvalidConfig) {
				t.Fatalf("ParseConfig = %v, %v: want nil and an ErrInvalidConfig", c, err)
			}
			return
		}
		fuzzCheckConfig(t, c)

		// A config written back with every field explicit parses to the
		// same Config.
		again, err := ParseConfig(fuzzConfigJSON(t, c))
		if err != nil {
			t.Fatalf("config %s parsed, but its explicit form does not: %v", data, err)
		}
		if !reflect.DeepEqual(again, c) {
			t.Fatalf("explicit form of %s parses to\n%+v\nnot\n%+v", data, again, c)
		}
	})
}

// FuzzConfigFields fuzzes the values of the config rather than its JSON, so
// that most inputs reach the semantic checks: every config that parses keeps
// the invariants, explicit bounds are kept as given, and a valid network with
// nothing else given always parses.
func FuzzConfigFields(f *testing.F) {
	f.Add(true, "10.5.0.0/16", 0, "", "", false, "", 0, "", "")
	f.Add(true, "10.5.0.0/16", 20, "10.5.16.0", "10.5.240.0/20", true, "fc00::/48", 0, "fc00:0:0:1::", "")
	f.Add(true, "10.5.0.0/23", 0, "10.5.1.0/25", "10.5.0.128", false, "", 0, "", "")
	f.Add(false, "", 0, "", "", true, "fc00::/120", 124, "fc00::10", "fc00::f0/124")
	f.Add(true, "10.5.1.0/16", 31, "10.6.0.0", "0.0.0.0", true, "::/0", 127, "fc00::1", "::")
	f.Fuzz(func(t *testing.T, ipv4 bool, network string, subnetLen int, lo, hi string,
		ipv6 bool, network6 string, subnetLen6 int, lo6, hi6 string) {
		fields := map[string]any{"EnableIPv4": ipv4, "EnableIPv6": ipv6}
		for name, v := range map[string]string{
			"Network": network, "SubnetMin": lo, "SubnetMax": hi,
			"IPv6Network": network6, "IPv6SubnetMin": lo6, "IPv6SubnetMax": hi6,
		} {
			if v != "" {
				fields[name] = v
			}
		}
		if subnetLen != 0 {
			fields["SubnetLen"] = subnetLen
		}
		if subnetLen6 != 0 {
			fields["IPv6SubnetLen"] = subnetLen6
		}
		data, err := json.Marshal(fields)
		if err != nil {
			t.Skip("not representable in JSON")
		}
		c, err := ParseConfig(data)
		if err != nil {
			if !errors.Is(err, ErrInvalidConfig) {
				t.Fatalf("error %v does not wrap ErrInvalidConfig", err)
			}
			// A plain network address with only defaults must parse.
			n, perr := netip.ParsePrefix(network)
			if ipv4 && !ipv6 && perr == nil && n.Addr().Is4() && n.Masked() == n &&
				n.Bits() >= 1 && n.Bits() <= 28 && subnetLen == 0 && lo == "" && hi == "" && !fuzzSpecial(n) {
				t.Fatalf("ParseConfig(%s): %v", data, err)
			}
			return
		}
		fuzzCheckConfig(t, c)
		for _, b := range []struct {
			enabled bool
			given   string
			got     netip.Prefix
		}{
			{ipv4, lo, c.SubnetMin}, {ipv4, hi, c.SubnetMax},
			{ipv6, lo6, c.IPv6SubnetMin}, {ipv6, hi6, c.IPv6SubnetMax},
		} {
			if !b.enabled || b.given == "" {
				continue
			}
			a, err := netip.ParseAddr(b.given)
			if err != nil {
				a = netip.MustParsePrefix(b.given).Addr()
			}
			if !a.IsUnspecified() && a != b.got.Addr() {
				t.Fatalf("bound %q was given, %v was kept", b.given, b.got)
			}
		}
		if ipv4 && subnetLen != 0 && c.SubnetLen != subnetLen || ipv6 && subnetLen6 != 0 && c.IPv6SubnetLen != subnetLen6 {
			t.Fatalf("explicit subnet lengths %d, %d became %d, %d", subnetLen, subnetLen6, c.SubnetLen, c.IPv6SubnetLen)
		}
	})
}

// fuzzCheckConfig checks the invariants of a Config that ParseConfig returned.
func fuzzCheckConfig(t *testing.T, c *Config) {
	t.Helper()
	if !c.EnableIPv4 && !c.EnableIPv6 {
		t.Fatalf("no family enabled: %+v", c)
	}
	type family struct {
		enabled                   bool
		v6                        bool
		network, lo, hi           netip.Prefix
		subnetLen, maxNet, maxSub int
	}
	fams := []family{
		{c.EnableIPv4, false, c.Network, c.SubnetMin, c.SubnetMax, c.SubnetLen, 28, 30},
		{c.EnableIPv6, true, c.IPv6Network, c.IPv6SubnetMin, c.IPv6SubnetMax, c.IPv6SubnetLen, 124, 126},
	}
	for _, f := range fams {
		if !f.enabled {
			if f.network.IsValid() || f.lo.IsValid() || f.hi.IsValid() || f.subnetLen != 0 {
				t.Fatalf("disabled family has values: %+v", c)
			}
			continue
		}
		n := f.network
		if !n.IsValid() || n.Masked() != n || n.Bits() < 1 || n.Bits() > f.maxNet || n.Addr().Is6() != f.v6 || n.Addr().Is4In6() {
			t.Fatalf("bad network %v in %+v", n, c)
		}
		if sp, ok := SpecialRange(n); ok {
			t.Fatalf("network %v overlaps %v (%s)", n, sp.Prefix, sp.What)
		}
		if f.subnetLen < n.Bits()+2 || f.subnetLen > f.maxSub {
			t.Fatalf("subnet length %d out of bounds for %v", f.subnetLen, n)
		}
		for _, p := range []netip.Prefix{f.lo, f.hi} {
			if !p.IsValid() || p.Bits() != f.subnetLen || p.Masked() != p || !n.Contains(p.Addr()) {
				t.Fatalf("bad SubnetMin/SubnetMax %v in %+v", p, c)
			}
		}
		if f.hi.Addr().Less(f.lo.Addr()) {
			t.Fatalf("SubnetMin %v after SubnetMax %v", f.lo, f.hi)
		}
	}
	// The bounds themselves fit, as leases; the subnet before SubnetMin
	// and an IPv4 lease with an extra IPv6 part of an IPv4-only config do
	// not.
	v4lo, v6lo := c.SubnetMin, c.IPv6SubnetMin
	if !c.Fits(v4lo, v6lo) || !c.Fits(c.SubnetMax, c.IPv6SubnetMax) {
		t.Fatalf("bounds do not fit: %+v", c)
	}
	if c.EnableIPv4 {
		if prev := netip.PrefixFrom(c.SubnetMin.Addr().Prev(), c.SubnetLen).Masked(); c.SubnetMin.Addr().Prev().IsValid() && c.Fits(prev, v6lo) {
			t.Fatalf("%v before SubnetMin %v fits", prev, c.SubnetMin)
		}
		if c.PoolSize() < 1 || c.PoolSize() > 1<<30 {
			t.Fatalf("PoolSize %d out of bounds", c.PoolSize())
		}
	}
	if !c.EnableIPv6 && c.Fits(v4lo, netip.MustParsePrefix("fc00::/64")) {
		t.Fatalf("IPv4-only config fits a dual-stack lease")
	}
	if c.EnableIPv6 && c.IPv6PoolSize() < 1 {
		t.Fatalf("IPv6PoolSize %d", c.IPv6PoolSize())
	}

	var backend map[string]json.RawMessage
	if err := json.Unmarshal(c.Backend, &backend); err != nil || c.BackendType == "" {
		t.Fatalf("Backend %s (type %q) is not an object with a type: %v", c.Backend, c.BackendType, err)
	}
	if !strings.Contains(c.String(), "backend="+c.BackendType) {
		t.Fatalf("String() = %q lacks the backend", c.String())
	}
}

// fuzzConfigJSON writes c with every field explicit.
func fuzzConfigJSON(t *testing.T, c *Config) []byte {
	t.Helper()
	var b bytes.Buffer
	b.WriteString(`{"EnableIPv4":` + strconv.FormatBool(c.EnableIPv4))
	b.WriteString(`,"EnableIPv6":` + strconv.FormatBool(c.EnableIPv6))
	b.WriteString(`,"EnableNFTables":` + strconv.FormatBool(c.EnableNFTables))
	if c.EnableIPv4 {
		b.WriteString(`,"Network":"` + c.Network.String() + `","SubnetLen":` + strconv.Itoa(c.SubnetLen) +
			`,"SubnetMin":"` + c.SubnetMin.Addr().String() + `","SubnetMax":"` + c.SubnetMax.String() + `"`)
	}
	if c.EnableIPv6 {
		b.WriteString(`,"IPv6Network":"` + c.IPv6Network.String() + `","IPv6SubnetLen":` + strconv.Itoa(c.IPv6SubnetLen) +
			`,"IPv6SubnetMin":"` + c.IPv6SubnetMin.String() + `","IPv6SubnetMax":"` + c.IPv6SubnetMax.Addr().String() + `"`)
	}
	b.WriteString(`,"Backend":`)
	b.Write(c.Backend)
	b.WriteString(`}`)
	return b.Bytes()
}

func FuzzParseLeaseKey(f *testing.F) {
	for _, s := range []string{
		"10.5.58.0-24",
		"fc00:0:0:3a::-64",
		"10.5.58.0-24&fc00:0:0:3a::-64",
		"10.5.58.1-24",
		"10.5.58.0-024",
		"fc00::-64&10.5.58.0-24",
		"FC00::-64",
		"::ffff:10.5.58.0-120",
		"a&b&c",
		"",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, key string) {
		v4, v6, err := ParseLeaseKey(key)
		if err != nil {
			if !errors.Is(err, ErrMalformedLease) || v4.IsValid() || v6.IsValid() {
				t.Fatalf("ParseLeaseKey(%q) = %v, %v, %v", key, v4, v6, err)
			}
			return
		}
		if !v4.IsValid() && !v6.IsValid() {
			t.Fatalf("ParseLeaseKey(%q) gave no subnet", key)
		}
		if v4.IsValid() && (!v4.Addr().Is4() || v4.Masked() != v4) {
			t.Fatalf("ParseLeaseKey(%q): bad IPv4 subnet %v", key, v4)
		}
		if v6.IsValid() && (!v6.Addr().Is6() || v6.Addr().Is4In6() || v6.Addr().Zone() != "" || v6.Masked() != v6) {
			t.Fatalf("ParseLeaseKey(%q): bad IPv6 subnet %v", key, v6)
		}
		if got := LeaseKey(v4, v6); got != key {
			t.Fatalf("ParseLeaseKey(%q) = %v, %v, whose LeaseKey is %q", key, v4, v6, got)
		}
	})
}

func FuzzParseLeaseAttrs(f *testing.F) {
	for _, s := range []string{
		leaseTestSpecValue,
		`{"PublicIP":"192.168.77.12","PublicIPv6":"2001:db8::12","BackendType":"vxlan","BackendData":{"VNI":1},"BackendV6Data":{"VNI":1}}`,
		`{"PublicIP":null,"PublicIPv6":"2001:db8::12","BackendType":"host-gw"}`,
		`{"PublicIP":"::ffff:192.168.77.12","BackendData":null}`,
		`{"PublicIP":"192.168.77.12","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"3e:5b:b9:8d:d6:4d"}}`,
		`{"PublicIP":"192.168.77.12","PublicIPv6":"2001:db8::12","BackendType":"host-gw","BackendData":{"a":[{}]},"BackendV6Data":{"VNI":1}}`,
		`{"PublicIP":"192.168.77.12","PublicIPv6":null,"BackendData":{"VNI":}}`,
		`{"PublicIP":"192.168.77.12","PublicIPv6":null,"BackendType":null}`,
		`{"PublicIP":"192.168.77.12","BackendData":{ "VNI" : 1,
 "VtepMAC":"3e:5b:b9:8d:d6:4d"}}`,
		`{"publicip":"192.168.77.12","BackendData":"<b>\u2028</b>"}`,
		`{"PublicIP":"127.0.0.1"}`,
		`{"PublicIPv6":"fe80::1%eth0"}`,
		`null`,
		``,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		// The decoder's shortcut for canonical values agrees with it.
		var fast, slow leaseAttrsJSON
		if decodeCanonicalAttrs(data, &fast) {
			if err := json.Unmarshal(data, &slow); err != nil || !reflect.DeepEqual(fast, slow) {
				t.Fatalf("decodeCanonicalAttrs(%q) = %+v; the decoder gives %+v, %v", data, fast, slow, err)
			}
		}
		a, err := ParseLeaseAttrs(data)
		if err != nil {
			if !errors.Is(err, ErrMalformedLease) {
				t.Fatalf("ParseLeaseAttrs error %v does not wrap ErrMalformedLease", err)
			}
			return
		}
		if !a.PublicIP.IsValid() && !a.PublicIPv6.IsValid() {
			t.Fatalf("no public address in %q", data)
		}
		if a.PublicIP.IsValid() && !a.PublicIP.Is4() {
			t.Fatalf("PublicIP %v is not IPv4", a.PublicIP)
		}
		if a.PublicIPv6.IsValid() && (!a.PublicIPv6.Is6() || a.PublicIPv6.Is4In6() || a.PublicIPv6.Zone() != "") {
			t.Fatalf("PublicIPv6 %v is not plain IPv6", a.PublicIPv6)
		}
		// The backend data are kept compact.
		for _, raw := range []json.RawMessage{a.BackendData, a.BackendV6Data} {
			var c bytes.Buffer
			if raw != nil && (json.Compact(&c, raw) != nil || !bytes.Equal(c.Bytes(), raw)) {
				t.Fatalf("backend data %q of %q is not compact JSON", raw, data)
			}
		}
		out, err := a.MarshalJSON()
		if err != nil {
			t.Fatalf("attrs parsed from %q do not marshal: %v", data, err)
		}
		if len(out) > MaxLeaseValueSize {
			// Marshalling escapes <, > and & as \u003c..., so a value
			// near the limit can grow past it; real values are far
			// smaller.
			return
		}
		b, err := ParseLeaseAttrs(out)
		if err != nil {
			t.Fatalf("marshalled %s does not parse: %v", out, err)
		}
		if a.PublicIP != b.PublicIP || a.PublicIPv6 != b.PublicIPv6 || a.BackendType != b.BackendType ||
			!fuzzJSONEqual(a.BackendData, b.BackendData) || !fuzzJSONEqual(a.BackendV6Data, b.BackendV6Data) {
			t.Fatalf("round trip of %q through %s changed it: %+v != %+v", data, out, a, b)
		}
		// Marshalling is a fixed point after one round.
		if out2, err := b.MarshalJSON(); err != nil || !bytes.Equal(out, out2) {
			t.Fatalf("second marshal %s != first %s (%v)", out2, out, err)
		}
	})
}

// fuzzJSONEqual reports whether two raw JSON values are both absent or
// decode to the same value.
func fuzzJSONEqual(a, b json.RawMessage) bool {
	if (a == nil) != (b == nil) {
		return false
	}
	if a == nil {
		return true
	}
	decode := func(r json.RawMessage) (any, error) {
		dec := json.NewDecoder(bytes.NewReader(r))
		dec.UseNumber()
		var v any
		err := dec.Decode(&v)
		return v, err
	}
	va, errA := decode(a)
	vb, errB := decode(b)
	return errA == nil && errB == nil && reflect.DeepEqual(va, vb)
}

// fuzzSpecial reports whether n overlaps a range no overlay may use.
func fuzzSpecial(n netip.Prefix) bool {
	_, ok := SpecialRange(n)
	return ok
}
