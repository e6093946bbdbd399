package wireguard

import (
	"encoding/hex"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// uapiConfig writes cfg in the UAPI "set" form wireguard-go's IpcSet
// takes (https://www.wireguard.com/xplatform/).
func uapiConfig(cfg wgtypes.Config) string {
	var b strings.Builder
	if cfg.PrivateKey != nil {
		fmt.Fprintf(&b, "private_key=%s\n", hex.EncodeToString(cfg.PrivateKey[:]))
	}
	if cfg.ListenPort != nil {
		fmt.Fprintf(&b, "listen_port=%d\n", *cfg.ListenPort)
	}
	if cfg.ReplacePeers {
		b.WriteString("replace_peers=true\n")
	}
	for i := range cfg.Peers {
		p := &cfg.Peers[i]
		fmt.Fprintf(&b, "public_key=%s\n", hex.EncodeToString(p.PublicKey[:]))
		if p.Remove {
			b.WriteString("remove=true\n")
			continue
		}
		if p.UpdateOnly {
			b.WriteString("update_only=true\n")
		}
		if p.PresharedKey != nil {
			fmt.Fprintf(&b, "preshared_key=%s\n", hex.EncodeToString(p.PresharedKey[:]))
		}
		if p.Endpoint != nil {
			fmt.Fprintf(&b, "endpoint=%s\n", p.Endpoint.AddrPort().String())
		}
		if p.PersistentKeepaliveInterval != nil {
			fmt.Fprintf(&b, "persistent_keepalive_interval=%d\n", int(p.PersistentKeepaliveInterval.Seconds()))
		}
		if p.ReplaceAllowedIPs {
			b.WriteString("replace_allowed_ips=true\n")
		}
		for _, n := range p.AllowedIPs {
			fmt.Fprintf(&b, "allowed_ip=%s\n", n.String())
		}
	}
	return b.String()
}

// parseUAPI reads the UAPI "get" form IpcGet returns.
func parseUAPI(name, s string) (*wgtypes.Device, error) {
	d := &wgtypes.Device{Name: name, Type: wgtypes.Userspace}
	var p *wgtypes.Peer
	var sec, nsec int64
	flush := func() {
		if p != nil {
			if sec != 0 || nsec != 0 {
				p.LastHandshakeTime = time.Unix(sec, nsec)
			}
			d.Peers = append(d.Peers, *p)
		}
		sec, nsec = 0, 0
	}
	for line := range strings.Lines(s) {
		k, v, ok := strings.Cut(strings.TrimSpace(line), "=")
		if !ok {
			continue
		}
		var err error
		switch k {
		case "private_key":
			err = setHexKey(&d.PrivateKey, v)
			if err == nil {
				d.PublicKey = d.PrivateKey.PublicKey()
			}
		case "listen_port":
			d.ListenPort, err = strconv.Atoi(v)
		case "fwmark":
			d.FirewallMark, err = strconv.Atoi(v)
		case "public_key":
			flush()
			p = &wgtypes.Peer{}
			err = setHexKey(&p.PublicKey, v)
		}
		if err != nil {
			return nil, fmt.Errorf("wireguard: UAPI %s: %w", k, err)
		}
		if p == nil || k == "public_key" {
			continue
		}
		switch k {
		case "preshared_key":
			err = setHexKey(&p.PresharedKey, v)
		case "endpoint":
			var ap netip.AddrPort
			if ap, err = netip.ParseAddrPort(v); err == nil {
				p.Endpoint = net.UDPAddrFromAddrPort(ap)
			}
		case "last_handshake_time_sec":
			sec, err = strconv.ParseInt(v, 10, 64)
		case "last_handshake_time_nsec":
			nsec, err = strconv.ParseInt(v, 10, 64)
		case "tx_bytes":
			p.TransmitBytes, err = strconv.ParseInt(v, 10, 64)
		case "rx_bytes":
			p.ReceiveBytes, err = strconv.ParseInt(v, 10, 64)
		case "persistent_keepalive_interval":
			var n int
			n, err = strconv.Atoi(v)
			p.PersistentKeepaliveInterval = time.Duration(n) * time.Second
		case "allowed_ip":
			var n *net.IPNet
			if _, n, err = net.ParseCIDR(v); err == nil {
				p.AllowedIPs = append(p.AllowedIPs, *n)
			}
		case "protocol_version":
			p.ProtocolVersion, err = strconv.Atoi(v)
		}
		if err != nil {
			return nil, fmt.Errorf("wireguard: UAPI %s: %w", k, err)
		}
	}
	flush()
	return d, nil
}

func setHexKey(k *wgtypes.Key, v string) error {
	b, err := hex.DecodeString(v)
	if err != nil || len(b) != wgtypes.KeyLen {
		return fmt.Errorf("not a hex key of %d bytes", wgtypes.KeyLen)
	}
	*k = wgtypes.Key(b)
	return nil
}
