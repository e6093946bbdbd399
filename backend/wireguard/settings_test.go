package wireguard

import (
	"errors"
	"strings"
	"testing"

	"github.com/netagent/netagent/lease"
)

// testPSK is a preshared key as `wg genpsk` prints one.
const testPSK = "ZmFrZS1wc2stZm9yLXRlc3RzLW9ubHktMzItYnl0ZXM="

func TestParseSettings(t *testing.T) {
	for _, tc := range []struct {
		in      string
		want    Settings
		wantErr string
	}{
		{in: ``, want: Settings{ListenPort: 51820, ListenPortV6: 51821, Mode: ModeSeparate}},
		{in: `{"Type":"wireguard","ListenPort":51830,"ListenPortV6":51831,"MTU":1400,"PersistentKeepaliveInterval":25,"Mode":"Auto"}`,
			want: Settings{ListenPort: 51830, ListenPortV6: 51831, MTU: 1400, PersistentKeepaliveInterval: 25, Mode: ModeAuto}},
		{in: `{"listenport":1}`, want: Settings{ListenPort: 1, ListenPortV6: 51821, Mode: ModeSeparate}},
		{in: `{"Type":"vxlan"}`, wantErr: `Type "vxlan"`},
		{in: `{"ListenPort":0}`, wantErr: "ListenPort 0 is out of range"},
		{in: `{"ListenPort":65536}`, wantErr: "ListenPort 65536 is out of range"},
		{in: `{"ListenPortV6":-1}`, wantErr: "ListenPortV6 -1"},
		{in: `{"ListenPort":"x"}`, wantErr: "invalid number"},
		{in: `{"MTU":100}`, wantErr: "MTU 100 leaves"},
		{in: `{"PersistentKeepaliveInterval":1.5}`, wantErr: "PersistentKeepaliveInterval 1.5 is not an integer"},
		{in: `{"Mode":"tunnel"}`, wantErr: `Mode "tunnel"`},
		{in: `{"PSK":"c2hvcnQ="}`, wantErr: "PSK: 5 bytes, want 32"},
		{in: `{"PSK":"!!not base64!!"}`, wantErr: "PSK: not base64"},
	} {
		got, err := ParseSettings([]byte(tc.in))
		if tc.wantErr != "" {
			if err == nil || !errors.Is(err, ErrInvalidConfig) || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("ParseSettings(%s) = %v, want an ErrInvalidConfig naming %q", tc.in, err, tc.wantErr)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("ParseSettings(%s) = %+v, %v; want %+v", tc.in, got, err, tc.want)
		}
	}
}

func TestParseSettingsPSK(t *testing.T) {
	s, err := ParseSettings([]byte(`{"PSK":"` + testPSK + `"}`))
	if err != nil || s.PSK == nil || s.PSK.String() != testPSK {
		t.Fatalf("ParseSettings with a PSK = %+v, %v; want the PSK", s, err)
	}
	// The PSK is a secret: an error about the rest never shows it.
	_, err = ParseSettings([]byte(`{"PSK":"` + testPSK + `","ListenPort":0}`))
	if err == nil || strings.Contains(err.Error(), testPSK) {
		t.Errorf("error %v: want one that does not show the PSK", err)
	}
}

func TestValidateModeDualStack(t *testing.T) {
	dual := func(backendJSON string) *lease.Config {
		return &lease.Config{EnableIPv4: true, EnableIPv6: true, BackendType: Type, Backend: []byte(backendJSON)}
	}
	if err := Validate(dual(`{"Mode":"separate"}`)); err != nil {
		t.Errorf("dual stack, Mode separate: %v", err)
	}
	for _, m := range []string{"auto", "ipv4", "ipv6"} {
		if err := Validate(dual(`{"Mode":"` + m + `"}`)); err != nil {
			t.Errorf("dual stack, Mode %s (one device): %v", m, err)
		}
	}
	if err := Validate(dual(`{"Mode":"both"}`)); !errors.Is(err, ErrInvalidConfig) {
		t.Errorf("dual stack, Mode both: %v, want ErrInvalidConfig", err)
	}
	if err := Validate(&lease.Config{EnableIPv6: true, BackendType: Type, Backend: []byte(`{"Mode":"ipv6"}`)}); err != nil {
		t.Errorf("IPv6 only, Mode ipv6: %v", err)
	}
}
