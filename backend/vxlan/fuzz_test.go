package vxlan

import (
	"encoding/json"
	"errors"
	"testing"
)

// The fuzzers check properties of the parsers of the two vxlan inputs that
// come from outside: a peer's lease BackendData and the backend object of
// the network config. Seeds are added here and under
// testdata/fuzz/<FuzzName>/.

func FuzzParseBackendData(f *testing.F) {
	for _, s := range []string{
		`{"VNI":1,"VtepMAC":"3e:5b:b9:8d:d6:4d"}`,
		`{"VNI":01,"VtepMAC":"3e:5b:b9:8d:d6:4d"}`,
		`{"VNI":1,"VtepMAC":"3e:5b:b9:8d:d6:4d"} `,
		`{"VNI":1,"VtepMAC":"3e:5b:b9:8d:d6:4d\"}`,
		`{"vni":1,"vtepmac":"3E-5B-B9-8D-D6-4D"}`,
		`{"VtepMAC":"00:00:00:00:00:00"}`,
		`{"VtepMAC":"ff:ff:ff:ff:ff:ff"}`,
		`{"VtepMAC":"01:00:5e:00:00:01"}`,
		`{"VtepMAC":"3e:5b:b9:8d:d6:4d:00:01"}`,
		`{"VtepMAC":"0000.5e00.5301"}`,
		`{"VtepMAC":1}`,
		`{"VtepMAC":"3e:5b:b9:8d:d6:4d","VtepMAC":"ff:ff:ff:ff:ff:ff"}`,
		`null`,
		`[]`,
		``,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		// The decoder's shortcut agrees with the decoder.
		if m, ok := canonicalVtepMAC(data); ok {
			var d struct{ VtepMAC string }
			if err := json.Unmarshal(data, &d); err != nil || d.VtepMAC != m {
				t.Fatalf("canonicalVtepMAC(%q) = %q; the decoder gives %q, %v", data, m, d.VtepMAC, err)
			}
		}
		mac, err := ParseBackendData(data)
		if err != nil {
			if mac != nil {
				t.Fatalf("ParseBackendData(%q) = %v with error %v", data, mac, err)
			}
			return
		}
		// What is programmed as a neighbour and an fdb entry is a unicast,
		// non-zero Ethernet address.
		if len(mac) != 6 || mac[0]&1 != 0 || (mac[0]|mac[1]|mac[2]|mac[3]|mac[4]|mac[5]) == 0 {
			t.Fatalf("ParseBackendData(%q) accepted %v", data, mac)
		}
		// The BackendData this host publishes for that MAC reads back as it.
		out, err := json.Marshal(leaseData{VNI: 1, VtepMAC: mac.String()})
		if err != nil {
			t.Fatal(err)
		}
		again, err := ParseBackendData(out)
		if err != nil || again.String() != mac.String() {
			t.Fatalf("%s (from %q) parses to %v, %v", out, data, again, err)
		}
	})
}

func FuzzParseSettings(f *testing.F) {
	for _, s := range []string{
		`{"Type":"vxlan"}`,
		`{"Type":"vxlan","VNI":4096,"Port":4789,"MTU":9000,"GBP":true,"Learning":true,"DirectRouting":true}`,
		`{"type":"vxlan","vni":16777215,"port":0}`,
		`{"Type":"vxlan","VNI":16777216}`,
		`{"Type":"vxlan","VNI":-1}`,
		`{"Type":"vxlan","VNI":1.5}`,
		`{"Type":"vxlan","VNI":"1"}`,
		`{"Type":"vxlan","MTU":117}`,
		`{"Type":"vxlan","MTU":118}`,
		`{"Type":"vxlan","Port":1e3}`,
		`{"Type":"host-gw"}`,
		`{"Type":"vxlan"} trailing`,
		`null`,
		``,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		s, err := ParseSettings(data)
		if err != nil {
			if !errors.Is(err, ErrInvalidConfig) {
				t.Fatalf("ParseSettings error %v does not wrap ErrInvalidConfig", err)
			}
			return
		}
		if s.VNI < 0 || s.VNI >= 1<<24 {
			t.Fatalf("ParseSettings(%q): VNI %d out of range", data, s.VNI)
		}
		if s.Port < 0 || s.Port > 65535 {
			t.Fatalf("ParseSettings(%q): Port %d out of range", data, s.Port)
		}
		if s.MTU != 0 && (s.MTU-overhead < 68 || s.MTU > 65535) {
			t.Fatalf("ParseSettings(%q): MTU %d leaves no room", data, s.MTU)
		}
		if DeviceName(s.VNI) == "" || len(DeviceName(s.VNI)) > 15 {
			t.Fatalf("VNI %d gives device name %q, not a valid link name", s.VNI, DeviceName(s.VNI))
		}
		// The settings written back explicitly parse to the same.
		out, err := json.Marshal(map[string]any{"Type": Type, "VNI": s.VNI, "Port": s.Port, "MTU": s.MTU,
			"GBP": s.GBP, "Learning": s.Learning, "DirectRouting": s.DirectRouting})
		if err != nil {
			t.Fatal(err)
		}
		again, err := ParseSettings(out)
		if err != nil || again != s {
			t.Fatalf("%s (from %q) parses to %+v, %v; want %+v", out, data, again, err, s)
		}
	})
}
