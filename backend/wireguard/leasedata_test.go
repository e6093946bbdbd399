package wireguard

import (
	"encoding/json"
	"strings"
	"testing"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// testPub is a public key as flannel publishes one.
const testPub = "Vw6cB3JdXqUcIaQbOHFr0vPJTjFbY0NqT6bqbQ0sZyc="

func TestParseBackendData(t *testing.T) {
	for _, tc := range []struct {
		in      string
		wantErr string
	}{
		{in: `{"PublicKey":"` + testPub + `","Port":51820}`},
		{in: `{"publickey":"` + testPub + `","port":1}`},
		{in: ``, wantErr: "no BackendData"},
		{in: `{"VNI":1,"VtepMAC":"02:00:00:00:00:01"}`, wantErr: "no PublicKey"},
		{in: `{"PublicKey":"c2hvcnQ=","Port":51820}`, wantErr: `PublicKey "c2hvcnQ=": 5 bytes, want 32`},
		{in: `{"PublicKey":"not base64!","Port":51820}`, wantErr: "not base64"},
		{in: `{"PublicKey":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=","Port":51820}`, wantErr: "all zero"},
		{in: `{"PublicKey":"` + testPub + `"}`, wantErr: "no Port"},
		{in: `{"PublicKey":"` + testPub + `","Port":0}`, wantErr: "Port 0 is not in [1, 65535]"},
		{in: `{"PublicKey":"` + testPub + `","Port":65536}`, wantErr: "Port 65536"},
		{in: `{"PublicKey":"` + testPub + `","Port":"51820"}`, wantErr: "BackendData"},
		{in: `{"PublicKey":42,"Port":51820}`, wantErr: "BackendData"},
		{in: `[]`, wantErr: "BackendData"},
	} {
		d, err := ParseBackendData([]byte(tc.in))
		if tc.wantErr == "" {
			if err != nil || d.PublicKey.String() != testPub {
				t.Errorf("ParseBackendData(%s) = %+v, %v; want key %s", tc.in, d, err, testPub)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
			t.Errorf("ParseBackendData(%s) = %v, want an error naming %q", tc.in, err, tc.wantErr)
		}
	}
}

func TestPeerDataRoundTrip(t *testing.T) {
	k, err := wgtypes.ParseKey(testPub)
	if err != nil {
		t.Fatal(err)
	}
	b, err := json.Marshal(PeerData{PublicKey: k, Port: 51820})
	if err != nil {
		t.Fatal(err)
	}
	if want := `{"PublicKey":"` + testPub + `","Port":51820}`; string(b) != want {
		t.Errorf("BackendData %s, want flannel's form %s", b, want)
	}
	d, err := ParseBackendData(b)
	if err != nil || d.PublicKey != k || d.Port != 51820 {
		t.Errorf("ParseBackendData(%s) = %+v, %v", b, d, err)
	}
}
