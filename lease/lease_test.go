package lease

import (
	"errors"
	"net/netip"
	"strings"
	"testing"
)

func leaseTestPrefix(s string) netip.Prefix {
	if s == "" {
		return netip.Prefix{}
	}
	return netip.MustParsePrefix(s)
}

func TestParseLeaseKey(t *testing.T) {
	tests := []struct {
		key    string
		v4, v6 string
	}{
		{"10.5.58.0-24", "10.5.58.0/24", ""},
		{"10.5.0.128-25", "10.5.0.128/25", ""},
		{"10.5.0.4-30", "10.5.0.4/30", ""},
		{"fc00:0:0:3a::-64", "", "fc00:0:0:3a::/64"},
		{"fc00::40-122", "", "fc00::40/122"},
		{"10.5.58.0-24&fc00:0:0:3a::-64", "10.5.58.0/24", "fc00:0:0:3a::/64"},
		{"10.244.1.0-24&2001:db8:1:1::-64", "10.244.1.0/24", "2001:db8:1:1::/64"},
	}
	for _, tt := range tests {
		t.Run(tt.key, func(t *testing.T) {
			v4, v6, err := ParseLeaseKey(tt.key)
			if err != nil {
				t.Fatalf("ParseLeaseKey: %v", err)
			}
			if want := leaseTestPrefix(tt.v4); v4 != want {
				t.Errorf("v4 = %v, want %v", v4, want)
			}
			if want := leaseTestPrefix(tt.v6); v6 != want {
				t.Errorf("v6 = %v, want %v", v6, want)
			}
			if got := LeaseKey(v4, v6); got != tt.key {
				t.Errorf("LeaseKey(%v, %v) = %q, want %q", v4, v6, got, tt.key)
			}
			l := Lease{Subnet: v4, IPv6Subnet: v6}
			if l.Key() != tt.key || l.String() != tt.key {
				t.Errorf("Lease.Key() = %q, String() = %q, want %q", l.Key(), l.String(), tt.key)
			}
		})
	}
}

func TestParseLeaseKeyErrors(t *testing.T) {
	for _, key := range []string{
		"",
		"garbage",
		"10.5.58.0",                           // no length
		"10.5.58.0-",                          // empty length
		"10.5.58.0/24",                        // slash, not dash
		"10.5.58.1-24",                        // not the network address
		"fc00::1-64",                          // not the network address
		"10.5.58.0-33",                        // length out of range
		"fc00::-129",                          // length out of range
		"10.5.58.0--1",                        // negative length
		"10.5.58.0-024",                       // leading zero
		"10.5.58.0-+24",                       // sign
		"10.5.58.0-24 ",                       // trailing space
		" 10.5.58.0-24",                       // leading space
		"010.5.58.0-24",                       // leading zero in the address
		"10.5.58-24",                          // short address
		"10.5.58.0-24&fc00::-64&fc01::-64",    // three parts
		"10.5.58.0-24&10.5.59.0-24&fc00::-64", // three parts
		"fc00::-64&10.5.58.0-24",              // IPv6 first
		"10.5.58.0-24&10.5.59.0-24",           // two IPv4
		"fc00::-64&fc01::-64",                 // two IPv6
		"10.5.58.0-24&",                       // empty second part
		"&fc00::-64",                          // empty first part
		"&",
		"::ffff:10.5.58.0-120", // IPv4-mapped
		"fe80::%eth0-64",       // zone
		"FC00::-64",            // not canonical: upper case
		"fc00:0::-64",          // not canonical: zeros not compressed
		"fc00:0000:0:3a::-64",  // not canonical: leading zeros
		"::10.5.58.0-120",      // not canonical: dotted quad
	} {
		t.Run(key, func(t *testing.T) {
			v4, v6, err := ParseLeaseKey(key)
			if err == nil {
				t.Fatalf("ParseLeaseKey(%q) = %v, %v, want an error", key, v4, v6)
			}
			if !errors.Is(err, ErrMalformedLease) {
				t.Errorf("error %v does not wrap ErrMalformedLease", err)
			}
			if v4.IsValid() || v6.IsValid() {
				t.Errorf("ParseLeaseKey(%q) returned %v, %v with an error", key, v4, v6)
			}
		})
	}
}

// leaseTestSpecValue is the lease value of docs/compatibility.md §3.2, as flannel writes it.
const leaseTestSpecValue = `{"PublicIP":"192.168.77.12","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"3e:5b:b9:8d:d6:4d"}}`

func TestParseLeaseAttrs(t *testing.T) {
	const vxlanData = `{"VNI":1,"VtepMAC":"3e:5b:b9:8d:d6:4d"}`
	tests := []struct {
		name  string
		value string
		want  LeaseAttrs
	}{
		{"contract example", leaseTestSpecValue, LeaseAttrs{
			PublicIP: netip.MustParseAddr("192.168.77.12"), BackendType: "vxlan", BackendData: []byte(vxlanData)}},
		{"contract example pretty-printed", `{
			"PublicIP": "192.168.77.12",
			"PublicIPv6": null,
			"BackendType": "vxlan",
			"BackendData": { "VNI": 1, "VtepMAC": "3e:5b:b9:8d:d6:4d" }
		}`, LeaseAttrs{PublicIP: netip.MustParseAddr("192.168.77.12"), BackendType: "vxlan", BackendData: []byte(vxlanData)}},
		{"PublicIPv6 missing", `{"PublicIP":"192.168.77.12","BackendType":"vxlan","BackendData":` + vxlanData + `}`,
			LeaseAttrs{PublicIP: netip.MustParseAddr("192.168.77.12"), BackendType: "vxlan", BackendData: []byte(vxlanData)}},
		{"host-gw, no BackendData", `{"PublicIP":"192.168.77.12","PublicIPv6":null,"BackendType":"host-gw"}`,
			LeaseAttrs{PublicIP: netip.MustParseAddr("192.168.77.12"), BackendType: "host-gw"}},
		{"BackendData null", `{"PublicIP":"192.168.77.12","BackendType":"host-gw","BackendData":null}`,
			LeaseAttrs{PublicIP: netip.MustParseAddr("192.168.77.12"), BackendType: "host-gw"}},
		{"dual stack", `{"PublicIP":"192.168.77.12","PublicIPv6":"2001:db8::12","BackendType":"vxlan",
			"BackendData":` + vxlanData + `,"BackendV6Data":{"VNI":1,"VtepMAC":"3e:5b:b9:8d:d6:4e"}}`,
			LeaseAttrs{PublicIP: netip.MustParseAddr("192.168.77.12"), PublicIPv6: netip.MustParseAddr("2001:db8::12"),
				BackendType: "vxlan", BackendData: []byte(vxlanData), BackendV6Data: []byte(`{"VNI":1,"VtepMAC":"3e:5b:b9:8d:d6:4e"}`)}},
		{"IPv6 only", `{"PublicIP":null,"PublicIPv6":"2001:db8::12","BackendType":"host-gw"}`,
			LeaseAttrs{PublicIPv6: netip.MustParseAddr("2001:db8::12"), BackendType: "host-gw"}},
		{"IPv6 only, as flannel writes it", `{"PublicIP":"0.0.0.0","PublicIPv6":"2001:db8::12","BackendType":"host-gw"}`,
			LeaseAttrs{PublicIPv6: netip.MustParseAddr("2001:db8::12"), BackendType: "host-gw"}},
		{"empty PublicIP string", `{"PublicIP":"","PublicIPv6":"2001:db8::12"}`,
			LeaseAttrs{PublicIPv6: netip.MustParseAddr("2001:db8::12")}},
		{"IPv4-mapped PublicIP", `{"PublicIP":"::ffff:192.168.77.12"}`,
			LeaseAttrs{PublicIP: netip.MustParseAddr("192.168.77.12")}},
		{"lowercase keys", `{"publicip":"192.168.77.12","backendtype":"vxlan"}`,
			LeaseAttrs{PublicIP: netip.MustParseAddr("192.168.77.12"), BackendType: "vxlan"}},
		{"unknown fields ignored", `{"PublicIP":"192.168.77.12","Extra":[1,2,3]}`,
			LeaseAttrs{PublicIP: netip.MustParseAddr("192.168.77.12")}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseLeaseAttrs([]byte(tt.value))
			if err != nil {
				t.Fatalf("ParseLeaseAttrs: %v", err)
			}
			leaseTestCheckAttrs(t, got, tt.want)
		})
	}
}

func leaseTestCheckAttrs(t *testing.T, got, want LeaseAttrs) {
	t.Helper()
	if got.PublicIP != want.PublicIP || got.PublicIPv6 != want.PublicIPv6 || got.BackendType != want.BackendType ||
		string(got.BackendData) != string(want.BackendData) || string(got.BackendV6Data) != string(want.BackendV6Data) ||
		(got.BackendData == nil) != (want.BackendData == nil) || (got.BackendV6Data == nil) != (want.BackendV6Data == nil) {
		t.Errorf("attrs = {%v %v %q %s %s}, want {%v %v %q %s %s}",
			got.PublicIP, got.PublicIPv6, got.BackendType, got.BackendData, got.BackendV6Data,
			want.PublicIP, want.PublicIPv6, want.BackendType, want.BackendData, want.BackendV6Data)
	}
}

func TestParseLeaseAttrsErrors(t *testing.T) {
	pad := func(n int) string {
		// A valid value padded with spaces to n bytes.
		v := `{"PublicIP":"192.168.77.12"}`
		return v + strings.Repeat(" ", n-len(v))
	}
	tests := []struct {
		name, value, wantErr string
	}{
		{"empty", ``, "unexpected end of JSON"},
		{"null", `null`, "neither PublicIP nor PublicIPv6 is set"},
		{"empty object", `{}`, "neither PublicIP nor PublicIPv6 is set"},
		{"both null", `{"PublicIP":null,"PublicIPv6":null,"BackendType":"vxlan"}`, "neither PublicIP nor PublicIPv6 is set"},
		{"array", `["192.168.77.12"]`, "cannot unmarshal array"},
		{"trailing garbage", leaseTestSpecValue + `x`, "invalid character"},
		{"truncated", leaseTestSpecValue[:40], "unexpected end of JSON"},
		{"PublicIP number", `{"PublicIP":3232255244}`, "cannot unmarshal number"},
		{"PublicIP garbage", `{"PublicIP":"192.168.77"}`, "PublicIP"},
		{"PublicIP loopback", `{"PublicIP":"127.0.0.1"}`, "PublicIP 127.0.0.1 is not a unicast host address"},
		{"PublicIP multicast", `{"PublicIP":"224.0.0.1"}`, "PublicIP 224.0.0.1 is not a unicast host address"},
		{"PublicIP unspecified, no PublicIPv6", `{"PublicIP":"0.0.0.0"}`, "neither PublicIP nor PublicIPv6 is set"},
		{"PublicIP broadcast", `{"PublicIP":"255.255.255.255"}`, "PublicIP 255.255.255.255 is not a unicast host address"},
		{"PublicIP IPv6", `{"PublicIP":"2001:db8::12"}`, `PublicIP "2001:db8::12" is not an IPv4 address`},
		{"PublicIPv6 IPv4", `{"PublicIP":"192.168.77.12","PublicIPv6":"192.168.77.13"}`, `PublicIPv6 "192.168.77.13" is not an IPv6 address`},
		{"PublicIPv6 IPv4-mapped", `{"PublicIPv6":"::ffff:192.168.77.13"}`, `PublicIPv6 "::ffff:192.168.77.13" is not an IPv6 address`},
		{"PublicIPv6 loopback", `{"PublicIPv6":"::1"}`, "PublicIPv6 ::1 is not a unicast host address"},
		{"PublicIPv6 multicast", `{"PublicIPv6":"ff02::1"}`, "PublicIPv6 ff02::1 is not a unicast host address"},
		{"PublicIPv6 unspecified, no PublicIP", `{"PublicIPv6":"::"}`, "neither PublicIP nor PublicIPv6 is set"},
		{"PublicIP of the wrong family, unspecified", `{"PublicIP":"::","PublicIPv6":"2001:db8::12"}`, "PublicIP \"::\" is not an IPv4 address"},
		{"PublicIPv6 with zone", `{"PublicIPv6":"fe80::1%eth0"}`, `PublicIPv6 "fe80::1%eth0" is not an IPv6 address`},
		{"oversized", pad(MaxLeaseValueSize + 1), "exceeds"},
		{"not UTF-8", "{\"PublicIP\":\"192.168.77.12\",\"BackendType\":\"vx\xfflan\"}", "not UTF-8"},
		{"BackendType number", `{"PublicIP":"192.168.77.12","BackendType":1}`, "cannot unmarshal number"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseLeaseAttrs([]byte(tt.value))
			if err == nil {
				t.Fatalf("ParseLeaseAttrs = %+v, want an error", got)
			}
			if !errors.Is(err, ErrMalformedLease) {
				t.Errorf("error %v does not wrap ErrMalformedLease", err)
			}
			if !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("error %q does not contain %q", err, tt.wantErr)
			}
		})
	}

	// The size limit is inclusive.
	if _, err := ParseLeaseAttrs([]byte(pad(MaxLeaseValueSize))); err != nil {
		t.Errorf("value of exactly MaxLeaseValueSize bytes: %v", err)
	}
}

func TestLeaseAttrsMarshalJSON(t *testing.T) {
	tests := []struct {
		name  string
		attrs LeaseAttrs
		want  string
	}{
		{"contract example", LeaseAttrs{
			PublicIP: netip.MustParseAddr("192.168.77.12"), BackendType: "vxlan",
			BackendData: []byte(`{"VNI":1,"VtepMAC":"3e:5b:b9:8d:d6:4d"}`),
		}, leaseTestSpecValue},
		{"BackendData compacted", LeaseAttrs{
			PublicIP: netip.MustParseAddr("192.168.77.12"), BackendType: "vxlan",
			BackendData: []byte("{ \"VNI\" : 1,\n \"VtepMAC\": \"3e:5b:b9:8d:d6:4d\" }"),
		}, leaseTestSpecValue},
		{"host-gw", LeaseAttrs{PublicIP: netip.MustParseAddr("192.168.77.12"), BackendType: "host-gw"},
			`{"PublicIP":"192.168.77.12","PublicIPv6":null,"BackendType":"host-gw"}`},
		{"null BackendData omitted", LeaseAttrs{PublicIP: netip.MustParseAddr("192.168.77.12"), BackendType: "host-gw", BackendData: []byte("null")},
			`{"PublicIP":"192.168.77.12","PublicIPv6":null,"BackendType":"host-gw"}`},
		{"dual stack", LeaseAttrs{
			PublicIP: netip.MustParseAddr("192.168.77.12"), PublicIPv6: netip.MustParseAddr("2001:db8::12"), BackendType: "vxlan",
			BackendData: []byte(`{"VNI":1}`), BackendV6Data: []byte(`{"VNI":1}`),
		}, `{"PublicIP":"192.168.77.12","PublicIPv6":"2001:db8::12","BackendType":"vxlan","BackendData":{"VNI":1},"BackendV6Data":{"VNI":1}}`},
		{"IPv6 only: PublicIP as flannel writes it", LeaseAttrs{PublicIPv6: netip.MustParseAddr("2001:db8::12"), BackendType: "host-gw"},
			`{"PublicIP":"0.0.0.0","PublicIPv6":"2001:db8::12","BackendType":"host-gw"}`},
		{"empty", LeaseAttrs{}, `{"PublicIP":"0.0.0.0","PublicIPv6":null}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := tt.attrs.MarshalJSON()
			if err != nil {
				t.Fatalf("MarshalJSON: %v", err)
			}
			if string(got) != tt.want {
				t.Errorf("MarshalJSON =\n%s\nwant\n%s", got, tt.want)
			}
		})
	}

	// Flannel's value survives a parse and marshal byte for byte.
	a, err := ParseLeaseAttrs([]byte(leaseTestSpecValue))
	if err != nil {
		t.Fatal(err)
	}
	got, err := a.MarshalJSON()
	if err != nil || string(got) != leaseTestSpecValue {
		t.Errorf("round trip of the contract example = %s, %v; want %s", got, err, leaseTestSpecValue)
	}

	// Invalid backend data is an error, not a corrupt value.
	if got, err := (LeaseAttrs{PublicIP: netip.MustParseAddr("192.168.77.12"), BackendData: []byte(`{"VNI":`)}).MarshalJSON(); err == nil {
		t.Errorf("MarshalJSON with invalid BackendData = %s, want an error", got)
	}
}

func TestLeaseEventTypeString(t *testing.T) {
	if EventAdded.String() != "added" || EventRemoved.String() != "removed" {
		t.Errorf("EventType strings = %q, %q", EventAdded, EventRemoved)
	}
}
