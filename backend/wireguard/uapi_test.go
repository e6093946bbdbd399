package wireguard

import (
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

func TestUAPIConfig(t *testing.T) {
	k, _ := wgtypes.ParseKey(testPub)
	psk, _ := wgtypes.ParseKey(testPSK)
	ka := 25 * time.Second
	port := 51820
	cfg := wgtypes.Config{ListenPort: &port, Peers: []wgtypes.PeerConfig{
		{PublicKey: k, PresharedKey: &psk, Endpoint: net.UDPAddrFromAddrPort(netip.MustParseAddrPort("[fd77::2]:51821")),
			PersistentKeepaliveInterval: &ka, ReplaceAllowedIPs: true,
			AllowedIPs: []net.IPNet{{IP: net.IP{10, 5, 2, 0}, Mask: net.CIDRMask(24, 32)}}},
		{PublicKey: k, Remove: true},
	}}
	got := uapiConfig(cfg)
	want := "listen_port=51820\n" +
		"public_key=570e9c07725d5ea51c21a41b38716bd2f3c94e315b63436a4fa6ea6d0d2c6727\n" +
		"preshared_key=66616b652d70736b2d666f722d74657374732d6f6e6c792d33322d6279746573\n" +
		"endpoint=[fd77::2]:51821\npersistent_keepalive_interval=25\nreplace_allowed_ips=true\nallowed_ip=10.5.2.0/24\n" +
		"public_key=570e9c07725d5ea51c21a41b38716bd2f3c94e315b63436a4fa6ea6d0d2c6727\nremove=true\n"
	if got != want {
		t.Errorf("uapiConfig:\n%s\nwant:\n%s", got, want)
	}
}

func TestParseUAPI(t *testing.T) {
	get := strings.Join([]string{
		"private_key=" + strings.Repeat("11", 32),
		"listen_port=51820",
		"public_key=570e9c07725d5ea51c21a41b38716bd2f3c94e315b63436a4fa6ea6d0d2c6727",
		"preshared_key=" + strings.Repeat("00", 32),
		"protocol_version=1",
		"endpoint=192.168.77.2:51820",
		"last_handshake_time_sec=1700000000",
		"last_handshake_time_nsec=5",
		"tx_bytes=100",
		"rx_bytes=200",
		"persistent_keepalive_interval=0",
		"allowed_ip=10.5.2.0/24",
		"errno=0", "",
	}, "\n")
	d, err := parseUAPI("flannel-wg", get)
	if err != nil {
		t.Fatal(err)
	}
	if d.ListenPort != 51820 || len(d.Peers) != 1 {
		t.Fatalf("device %+v", d)
	}
	p := d.Peers[0]
	if p.PublicKey.String() != testPub || p.Endpoint.String() != "192.168.77.2:51820" || p.TransmitBytes != 100 ||
		p.ReceiveBytes != 200 || !p.LastHandshakeTime.Equal(time.Unix(1700000000, 5)) ||
		len(p.AllowedIPs) != 1 || p.AllowedIPs[0].String() != "10.5.2.0/24" {
		t.Errorf("peer %+v", p)
	}
	if _, err := parseUAPI("x", "listen_port=x\n"); err == nil {
		t.Error("bad listen_port: want an error")
	}
}
