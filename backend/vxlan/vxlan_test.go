package vxlan

import (
	"encoding/json"
	"errors"
	"net/netip"
	"strings"
	"testing"

	"github.com/netagent/netagent/backend"
	"github.com/netagent/netagent/iface"
	"github.com/netagent/netagent/lease"
	"github.com/vishvananda/netlink"
)

func TestParseSettings(t *testing.T) {
	tests := []struct {
		name    string
		raw     string
		want    Settings
		wantErr string
	}{
		{"empty", ``, Settings{VNI: 1}, ""},
		{"type only", `{"Type":"vxlan"}`, Settings{VNI: 1}, ""},
		{"all fields", `{"Type":"vxlan","VNI":42,"Port":4789,"MTU":9000,"GBP":true,"Learning":true,"DirectRouting":true}`,
			Settings{VNI: 42, Port: 4789, MTU: 9000, GBP: true, Learning: true, DirectRouting: true}, ""},
		{"case insensitive", `{"type":"vxlan","vni":3,"directrouting":true}`, Settings{VNI: 3, DirectRouting: true}, ""},
		{"VNI too big", `{"VNI":16777216}`, Settings{}, "VNI"},
		{"VNI negative", `{"VNI":-1}`, Settings{}, "VNI"},
		{"VNI not integer", `{"VNI":1.5}`, Settings{}, "VNI"},
		{"Port too big", `{"Port":65536}`, Settings{}, "Port"},
		{"MTU too small", `{"MTU":100}`, Settings{}, "MTU"},
		{"GBP not bool", `{"GBP":"yes"}`, Settings{}, "GBP"},
		{"other type", `{"Type":"host-gw"}`, Settings{}, "Type"},
		{"not an object", `[1]`, Settings{}, "vxlan"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseSettings(json.RawMessage(tt.raw))
			if tt.wantErr != "" {
				if err == nil || !errors.Is(err, ErrInvalidConfig) || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("ParseSettings(%s) = %v, want an ErrInvalidConfig naming %q", tt.raw, err, tt.wantErr)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("ParseSettings(%s) = %+v, %v; want %+v", tt.raw, got, err, tt.want)
			}
		})
	}
}

func TestVtepMAC(t *testing.T) {
	ip := netip.MustParseAddr("192.168.77.1")
	a, b := VtepMAC(ip, 1), VtepMAC(ip, 1)
	if a.String() != b.String() {
		t.Fatalf("VtepMAC not stable: %s vs %s", a, b)
	}
	if a[0]&0x02 == 0 || a[0]&0x01 != 0 {
		t.Fatalf("VtepMAC %s is not a locally administered unicast address", a)
	}
	if VtepMAC(ip, 2).String() == a.String() || VtepMAC(netip.MustParseAddr("192.168.77.2"), 1).String() == a.String() {
		t.Fatal("VtepMAC does not depend on both the IP and the VNI")
	}
}

func TestParseBackendData(t *testing.T) {
	tests := []struct {
		data string
		ok   bool
	}{
		{`{"VNI":1,"VtepMAC":"3e:5b:b9:8d:d6:4d"}`, true},
		{`{"VNI":1,"VtepMAC":"3E:5B:B9:8D:D6:4D"}`, true},
		{`{"VNI":1}`, false},
		{`{"VNI":1,"VtepMAC":"01:00:5e:00:00:01"}`, false},
		{`{"VNI":1,"VtepMAC":"00:00:00:00:00:00"}`, false},
		{`{"VNI":1,"VtepMAC":"00:00:00:00:fe:80:00:00:00:00:00:00:02:00:5e:10:00:00:00:01"}`, false},
		{`{"VNI":1,"VtepMAC":"nope"}`, false},
		{`"str"`, false},
		{``, false},
	}
	for _, tt := range tests {
		mac, err := ParseBackendData([]byte(tt.data))
		if (err == nil) != tt.ok {
			t.Errorf("ParseBackendData(%s) = %v, %v; want ok=%t", tt.data, mac, err, tt.ok)
		}
	}
}

func TestNewAndBackendData(t *testing.T) {
	ext := iface.External{Name: "eth0", Index: 2, MTU: 1500,
		Addr: netip.MustParseAddr("192.168.77.1"), PublicIP: netip.MustParseAddr("192.168.77.1")}
	b, err := New(backend.Options{Handle: &netlink.Handle{}, Ext: ext,
		Config: &lease.Config{BackendType: "vxlan", Backend: json.RawMessage(`{"Type":"vxlan","VNI":7}`)}})
	if err != nil {
		t.Fatal(err)
	}
	if b.MTU() != 1450 {
		t.Errorf("MTU = %d, want 1450", b.MTU())
	}
	data, err := b.BackendData()
	if err != nil {
		t.Fatal(err)
	}
	want := `{"VNI":7,"VtepMAC":"` + VtepMAC(ext.PublicIP, 7).String() + `"}`
	if string(data) != want {
		t.Errorf("BackendData = %s, want %s", data, want)
	}
	if _, err := ParseBackendData(data); err != nil {
		t.Errorf("own BackendData does not parse: %v", err)
	}

	b, err = New(backend.Options{Handle: &netlink.Handle{}, Ext: ext,
		Config: &lease.Config{Backend: json.RawMessage(`{"Type":"vxlan","MTU":9000}`)}})
	if err != nil || b.MTU() != 8950 {
		t.Errorf("MTU with backend MTU 9000 = %v, %v; want 8950", b, err)
	}
	if _, err := New(backend.Options{Handle: &netlink.Handle{}, Ext: ext,
		Config: &lease.Config{Backend: json.RawMessage(`{"VNI":"x"}`)}}); !errors.Is(err, ErrInvalidConfig) {
		t.Errorf("New with a bad VNI: %v, want ErrInvalidConfig", err)
	}
}
