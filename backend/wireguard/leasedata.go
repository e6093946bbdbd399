package wireguard

import (
	"encoding/json"
	"errors"
	"fmt"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// PeerData is a host's WireGuard BackendData (or BackendV6Data), flannel's
// form: {"PublicKey":"<base64 Curve25519 public key>","Port":51820}.
type PeerData struct {
	PublicKey wgtypes.Key
	Port      int
}

// leaseData is PeerData as JSON.
type leaseData struct {
	PublicKey string
	Port      int
}

// MarshalJSON writes flannel's form.
func (d PeerData) MarshalJSON() ([]byte, error) {
	return json.Marshal(leaseData{PublicKey: d.PublicKey.String(), Port: d.Port})
}

// ParseBackendData parses and checks a peer's BackendData or
// BackendV6Data: a base64 key of 32 bytes, not all zero, and a port in
// [1, 65535]. Errors name the field at fault.
func ParseBackendData(data []byte) (PeerData, error) {
	if len(data) == 0 {
		return PeerData{}, errors.New("wireguard: no BackendData")
	}
	var j struct {
		PublicKey *string
		Port      *int64
	}
	if err := json.Unmarshal(data, &j); err != nil {
		return PeerData{}, fmt.Errorf("wireguard: BackendData: %w", err)
	}
	if j.PublicKey == nil {
		return PeerData{}, errors.New("wireguard: BackendData has no PublicKey")
	}
	k, err := parseKey(*j.PublicKey)
	if err != nil {
		return PeerData{}, fmt.Errorf("wireguard: BackendData PublicKey %q: %v", *j.PublicKey, err)
	}
	if k == (wgtypes.Key{}) {
		return PeerData{}, errors.New("wireguard: BackendData PublicKey is all zero")
	}
	if j.Port == nil {
		return PeerData{}, errors.New("wireguard: BackendData has no Port")
	}
	if port := *j.Port; port < 1 || port > 65535 {
		return PeerData{}, fmt.Errorf("wireguard: BackendData Port %d is not in [1, 65535]", port)
	}
	return PeerData{PublicKey: k, Port: int(*j.Port)}, nil
}

// identity is the claims table's identity of backend data: its public
// key, which no two hosts may share.
func identity(data []byte) (string, error) {
	d, err := ParseBackendData(data)
	if err != nil {
		return "", err
	}
	return d.PublicKey.String(), nil
}
