package wireguard

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/netagent/netagent/backend"
	"github.com/netagent/netagent/lease"
)

// ErrInvalidConfig is wrapped by every error about the backend's fields.
var ErrInvalidConfig = errors.New("wireguard: invalid backend config")

// Defaults of flannel's wireguard backend.
const (
	DefaultListenPort   = 51820
	DefaultListenPortV6 = 51821
)

// Modes of Settings.Mode (flannel's names).
const (
	// ModeSeparate: one device per address family (flannel-wg,
	// flannel-wg-v6), each with its own port.
	ModeSeparate = "separate"
	// ModeAuto, ModeIPv4, ModeIPv6: flannel's single device for both
	// families on a dual-stack network (flannel-wg on ListenPort), a
	// peer's endpoint its IPv4 public IP (ipv4), its IPv6 one (ipv6), or
	// the IPv4 one unless it is private and both the peer's IPv6 and
	// this host's are public (auto). On a network of one family they
	// are the same as separate.
	ModeAuto = "auto"
	ModeIPv4 = "ipv4"
	ModeIPv6 = "ipv6"
)

// Settings are the backend fields of the network config (flannel's).
type Settings struct {
	// PSK is the preshared key applied to every peer; nil for none.
	PSK          *wgtypes.Key
	ListenPort   int
	ListenPortV6 int
	// MTU is the base MTU the overhead is taken from; 0: the external
	// interface's.
	MTU int
	// PersistentKeepaliveInterval is in seconds; 0 is off.
	PersistentKeepaliveInterval int
	Mode                        string
}

// Validate checks the backend fields of cfg as New will.
func Validate(cfg *lease.Config) error {
	_, err := ParseSettings(cfg.Backend)
	return err
}

// ParseSettings parses and validates the backend object of the network
// config (field names match case-insensitively); errors name the field
// and never show the PSK.
func ParseSettings(raw json.RawMessage) (Settings, error) {
	s := Settings{ListenPort: DefaultListenPort, ListenPortV6: DefaultListenPortV6, Mode: ModeSeparate}
	if len(raw) == 0 {
		return s, nil
	}
	var j struct {
		Type                        string
		PSK                         *string
		ListenPort                  *json.Number
		ListenPortV6                *json.Number
		MTU                         *json.Number
		PersistentKeepaliveInterval *json.Number
		Mode                        *string
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	if err := dec.Decode(&j); err != nil {
		return s, fmt.Errorf("%w: %v", ErrInvalidConfig, err)
	}
	if j.Type != "" && j.Type != Type {
		return s, fmt.Errorf("%w: Type %q is not %q", ErrInvalidConfig, j.Type, Type)
	}
	if j.PSK != nil && *j.PSK != "" {
		k, err := parseKey(*j.PSK)
		if err != nil {
			return s, fmt.Errorf("%w: PSK: %v", ErrInvalidConfig, err)
		}
		s.PSK = &k
	}
	var err error
	if s.ListenPort, err = backend.IntField(ErrInvalidConfig, "ListenPort", j.ListenPort, DefaultListenPort, 1, 65535); err != nil {
		return s, err
	}
	if s.ListenPortV6, err = backend.IntField(ErrInvalidConfig, "ListenPortV6", j.ListenPortV6, DefaultListenPortV6, 1, 65535); err != nil {
		return s, err
	}
	if s.MTU, err = backend.IntField(ErrInvalidConfig, "MTU", j.MTU, 0, 0, 65535); err != nil {
		return s, err
	}
	if s.MTU != 0 && s.MTU-overhead < 68 {
		return s, fmt.Errorf("%w: MTU %d leaves less than 68 bytes after the %d bytes of WireGuard overhead", ErrInvalidConfig, s.MTU, overhead)
	}
	if s.PersistentKeepaliveInterval, err = backend.IntField(ErrInvalidConfig, "PersistentKeepaliveInterval", j.PersistentKeepaliveInterval, 0, 0, 65535); err != nil {
		return s, err
	}
	if j.Mode != nil && *j.Mode != "" {
		switch m := strings.ToLower(*j.Mode); m {
		case ModeSeparate, ModeAuto, ModeIPv4, ModeIPv6:
			s.Mode = m
		default:
			return s, fmt.Errorf("%w: Mode %q is not one of separate, auto, ipv4, ipv6", ErrInvalidConfig, *j.Mode)
		}
	}
	return s, nil
}

// parseKey decodes a base64 WireGuard key (32 bytes); the error does not
// repeat the value, which may be a secret.
func parseKey(s string) (wgtypes.Key, error) {
	b, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		return wgtypes.Key{}, errors.New("not base64")
	}
	if len(b) != wgtypes.KeyLen {
		return wgtypes.Key{}, fmt.Errorf("%d bytes, want %d", len(b), wgtypes.KeyLen)
	}
	return wgtypes.Key(b), nil
}
