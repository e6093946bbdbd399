package wireguard

import (
	"encoding/json"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/netagent/netagent/backend"
	"github.com/netagent/netagent/backend/internal/dataplane"
	"github.com/netagent/netagent/internal/await"
	"github.com/netagent/netagent/internal/nstest"
)

func TestSelectEndpoint(t *testing.T) {
	priv4, pub4 := netip.MustParseAddrPort("192.168.77.2:51820"), netip.MustParseAddrPort("203.0.113.2:51820")
	priv6, pub6 := netip.MustParseAddrPort("[fd00:77::2]:51820"), netip.MustParseAddrPort("[2001:db8::2]:51820")
	own6Pub, own6Priv := netip.MustParseAddr("2001:db8::1"), netip.MustParseAddr("fd00:77::1")
	for _, tc := range []struct {
		mode   string
		v4, v6 netip.AddrPort
		extV6  netip.Addr
		want   netip.AddrPort
	}{
		{ModeIPv4, priv4, pub6, own6Pub, priv4},
		{ModeIPv6, pub4, priv6, own6Priv, priv6},
		{ModeIPv6, pub4, netip.AddrPort{}, own6Pub, pub4}, // the only one the peer has
		{ModeIPv4, netip.AddrPort{}, priv6, own6Pub, priv6},
		{ModeAuto, pub4, pub6, own6Pub, pub4},    // a public IPv4 first
		{ModeAuto, priv4, pub6, own6Pub, pub6},   // private IPv4, both IPv6 public
		{ModeAuto, priv4, pub6, own6Priv, priv4}, // this host's IPv6 private
		{ModeAuto, priv4, priv6, own6Pub, priv4}, // the peer's IPv6 private
		{ModeAuto, priv4, pub6, netip.Addr{}, priv4},
		{ModeSeparate, priv4, netip.AddrPort{}, own6Pub, priv4},
	} {
		if got := selectEndpoint(tc.mode, tc.v4, tc.v6, tc.extV6); got != tc.want {
			t.Errorf("selectEndpoint(%s, %s, %s, own %s) = %s, want %s", tc.mode, tc.v4, tc.v6, tc.extV6, got, tc.want)
		}
	}
}

// TestOneDeviceDualStack: with Mode auto or ipv6 on a dual-stack network,
// one device (flannel-wg) carries both families: one peer per host with
// both subnets as AllowedIPs, its endpoint of the family the mode picks,
// the device's port in both backend data; ping works over both families.
func TestOneDeviceDualStack(t *testing.T) {
	for _, tc := range []struct {
		mode, endpoint string
	}{
		{ModeAuto, "192.168.77.2:51820"}, // private underlay: IPv4
		{ModeIPv6, "[fd00:77::2]:51820"},
	} {
		t.Run(tc.mode, func(t *testing.T) {
			a, b := dualStackPair(t, `{"Type":"wireguard","Mode":"`+tc.mode+`"}`)

			if d, _ := b.b.BackendV6Data(); string(d) != `{"PublicKey":"`+b.b.PublicKey()+`","Port":51820}` {
				t.Errorf("BackendV6Data %s: want the device's port, 51820", d)
			}
			a.waitPeers(t, "B on A's device with both subnets", b.b.PublicKey()+" 10.5.2.0/24,fd00:5:0:2::/64")
			await.Eventually(t, wait, "B reachable from A over IPv4", func() error { return a.ping(b.overlay()) })
			await.Eventually(t, wait, "B reachable from A over IPv6", func() error { return a.ping(b.subnet6.Addr().String()) })
			if err := b.ping(a.subnet6.Addr().String()); err != nil {
				t.Error(err)
			}
			dev, err := a.device()
			if err != nil {
				t.Fatal(err)
			}
			if got := dev.Peers[0].Endpoint.String(); got != tc.endpoint {
				t.Errorf("B's endpoint %s, want %s", got, tc.endpoint)
			}
			if out, err := a.ns.Try("ip", "link", "show", DeviceNameV6); err == nil {
				t.Errorf("%s exists on A: want one device\n%s", DeviceNameV6, out)
			}
			st := a.b.Status()
			if len(st.WireGuard) != 1 || len(st.Peers) != 2 {
				t.Fatalf("status: %d devices, %d peers; want 1 device, B's two subnets", len(st.WireGuard), len(st.Peers))
			}
			for _, p := range st.Peers {
				if !p.Programmed || p.WireGuard == nil {
					t.Errorf("status peer %s: programmed %v, device's view %+v", p.Subnet, p.Programmed, p.WireGuard)
				}
			}
		})
	}
}

// dualStackPair is pair on the dual-stack network (10.5.0.0/16 and
// fd00:5::/48): hosts A (10.5.1.0/24, fd00:5:0:1::/64) and B
// (10.5.2.0/24, fd00:5:0:2::/64) on an underlay of both families, each
// running the userspace backend, each with the other as its peer.
func dualStackPair(t *testing.T, backendJSON string) (a, b *host) {
	t.Helper()
	nsA, nsB := nstest.Underlay(t)
	nsA.AddrAdd(t, "eth0", "192.168.77.1/24", "fd00:77::1/64")
	nsB.AddrAdd(t, "eth0", "192.168.77.2/24", "fd00:77::2/64")
	hosts := []*host{{ns: nsA, subnet6: netip.MustParsePrefix("fd00:5:0:1::/64"), pub6: netip.MustParseAddr("fd00:77::1")},
		{ns: nsB, subnet6: netip.MustParsePrefix("fd00:5:0:2::/64"), pub6: netip.MustParseAddr("fd00:77::2")}}
	for i, h := range hosts {
		dir := t.TempDir()
		h.impl, h.keyFile, h.sockDir = ImplUserspace, dir+"/wgkey", dir+"/sock"
		h.subnet = netip.MustParsePrefix(fmt.Sprintf("10.5.%d.0/24", i+1))
		h.pub = netip.MustParseAddr(fmt.Sprintf("192.168.77.%d", i+1))
		h.start(t, backendJSON, time.Hour)
	}
	a, b = hosts[0], hosts[1]
	a.updates <- backend.Update{Own: a.lease(), Batch: snapshot(b.lease())}
	b.updates <- backend.Update{Own: b.lease(), Batch: snapshot(a.lease())}
	return a, b
}

// TestFirstSyncKeepsOtherFamily: on one device for both families, found
// with its peers (the kernel's device after a restart; here configured
// before the first pass), the first family's first sync leaves the other
// family's AllowedIPs and the endpoint it chose; once both families have
// synced, the peer is what the leases make it.
func TestFirstSyncKeepsOtherFamily(t *testing.T) {
	nsA, _ := nstest.Underlay(t)
	nsA.AddrAdd(t, "eth0", "192.168.77.1/24", "fd00:77::1/64")
	dir := t.TempDir()
	h := &host{ns: nsA, impl: ImplUserspace, keyFile: dir + "/wgkey", sockDir: dir + "/sock",
		subnet: netip.MustParsePrefix("10.5.1.0/24"), pub: netip.MustParseAddr("192.168.77.1"),
		subnet6: netip.MustParsePrefix("fd00:5:0:1::/64"), pub6: netip.MustParseAddr("fd00:77::1")}
	h.b = h.newBackend(t, `{"Type":"wireguard","Mode":"ipv6"}`, time.Hour)
	dev := h.b.tunnels[0]
	t.Cleanup(func() { dev.close() })
	v4, v6 := familyTunnel{dev, false}, familyTunnel{dev, true}
	if _, _, err := v4.EnsureDevice(); err != nil {
		t.Fatal(err)
	}
	peerPriv, _ := wgtypes.GeneratePrivateKey()
	key := peerPriv.PublicKey()
	data, _ := json.Marshal(PeerData{PublicKey: key, Port: 51820})
	b4 := dataplane.TunnelPeer{Key: "10.5.2.0-24", Subnet: netip.MustParsePrefix("10.5.2.0/24"), PublicIP: netip.MustParseAddr("192.168.77.2"), Data: data}
	b6 := dataplane.TunnelPeer{Key: "10.5.2.0-24", Subnet: netip.MustParsePrefix("fd00:5:0:2::/64"), PublicIP: netip.MustParseAddr("fd00:77::2"), Data: data}
	h.configure(t, wgtypes.Config{Peers: []wgtypes.PeerConfig{{
		PublicKey: key, Endpoint: net.UDPAddrFromAddrPort(netip.MustParseAddrPort("[fd00:77::2]:51820")),
		AllowedIPs: []net.IPNet{prefixIPNet(b4.Subnet), prefixIPNet(b6.Subnet)},
	}}})

	both := key.String() + " 10.5.2.0/24,fd00:5:0:2::/64"
	for _, step := range []struct {
		what     string
		sync     func() (map[netip.Prefix]error, int, error)
		peer     string
		endpoint string
	}{
		{"the IPv4 engine's first sync", func() (map[netip.Prefix]error, int, error) { return v4.SyncPeers([]dataplane.TunnelPeer{b4}) }, both, "[fd00:77::2]:51820"},
		{"the IPv6 engine's first sync", func() (map[netip.Prefix]error, int, error) { return v6.SyncPeers([]dataplane.TunnelPeer{b6}) }, both, "[fd00:77::2]:51820"},
		{"B's IPv6 lease gone", func() (map[netip.Prefix]error, int, error) { return v6.SyncPeers(nil) }, key.String() + " 10.5.2.0/24", "192.168.77.2:51820"},
	} {
		if failed, _, err := step.sync(); err != nil || len(failed) > 0 {
			t.Fatalf("%s: failed %v, err %v", step.what, failed, err)
		}
		if got := h.peers(t); !slices.Equal(got, []string{step.peer}) {
			t.Errorf("after %s: peers %q, want %q", step.what, got, step.peer)
		}
		d, err := h.device()
		if err != nil {
			t.Fatal(err)
		}
		if len(d.Peers) == 1 && d.Peers[0].Endpoint.String() != step.endpoint {
			t.Errorf("after %s: endpoint %s, want %s", step.what, d.Peers[0].Endpoint, step.endpoint)
		}
	}
}
