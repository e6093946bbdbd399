package wireguard

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/netagent/netagent/backend"
	"github.com/netagent/netagent/backend/backendtest"
	"github.com/netagent/netagent/internal/await"
	"github.com/netagent/netagent/internal/nstest"
	"github.com/netagent/netagent/lease"
)

// testLogLevel is the backends' log level in tests.
var testLogLevel = slog.LevelWarn

// wait bounds a hang; it is never what a test asserts.
const wait = 30 * time.Second

// host is one backend running in its own namespace, with its own key file
// and UAPI socket directory.
type host struct {
	ns      *nstest.NS
	b       *Backend
	subnet  netip.Prefix
	pub     netip.Addr
	updates chan<- backend.Update
	stop    func()
	keyFile string
	sockDir string
	impl    string
	// warns counts the backend's warnings by lease key.
	warns *warnCounter
	// subnet6 and pub6, when valid, make the network dual-stack.
	subnet6 netip.Prefix
	pub6    netip.Addr
	// noRepair runs the backend with backend.Options.NoRepair.
	noRepair bool
}

// netConfig is the IPv4 network 10.5.0.0/16 with /24 subnets.
func netConfig(backendJSON string) *lease.Config {
	return &lease.Config{
		EnableIPv4: true, Network: netip.MustParsePrefix("10.5.0.0/16"), SubnetLen: 24,
		BackendType: Type, Backend: json.RawMessage(backendJSON),
	}
}

// pair is hosts A (10.5.1.0/24, 192.168.77.1) and B (10.5.2.0/24,
// 192.168.77.2) on one underlay link, each running the userspace backend
// with resync period resync, each with the other as its peer.
func pair(t *testing.T, backendJSON string, resync time.Duration) (a, b *host) {
	t.Helper()
	return pairImpl(t, ImplUserspace, backendJSON, resync)
}

// pairImpl is pair with the implementation impl.
func pairImpl(t *testing.T, impl, backendJSON string, resync time.Duration) (a, b *host) {
	t.Helper()
	nsA, nsB := nstest.Underlay(t)
	nsA.AddrAdd(t, "eth0", "192.168.77.1/24")
	nsB.AddrAdd(t, "eth0", "192.168.77.2/24")
	a = startHost(t, nsA, impl, "10.5.1.0/24", "192.168.77.1", backendJSON, resync)
	b = startHost(t, nsB, impl, "10.5.2.0/24", "192.168.77.2", backendJSON, resync)
	a.updates <- backend.Update{Own: a.lease(), Batch: snapshot(b.lease())}
	b.updates <- backend.Update{Own: b.lease(), Batch: snapshot(a.lease())}
	return a, b
}

func startHost(t *testing.T, ns *nstest.NS, impl, subnet, pub, backendJSON string, resync time.Duration) *host {
	t.Helper()
	dir := t.TempDir()
	h := &host{ns: ns, impl: impl, subnet: netip.MustParsePrefix(subnet), pub: netip.MustParseAddr(pub),
		keyFile: filepath.Join(dir, "wgkey"), sockDir: filepath.Join(dir, "sock")}
	h.start(t, backendJSON, resync)
	return h
}

// start runs (again) the backend of h.
func (h *host) start(t *testing.T, backendJSON string, resync time.Duration) {
	t.Helper()
	h.b = h.newBackend(t, backendJSON, resync)
	h.updates, h.stop = backendtest.Start(t, h.b)
}

// newBackend makes h's backend without running it.
func (h *host) newBackend(t *testing.T, backendJSON string, resync time.Duration) *Backend {
	t.Helper()
	if h.warns == nil {
		h.warns = &warnCounter{n: make(map[string]int)}
	}
	cfg, addrs := netConfig(backendJSON), []netip.Addr{h.pub}
	if h.pub6.IsValid() {
		cfg.EnableIPv6, cfg.IPv6Network, cfg.IPv6SubnetLen = true, netip.MustParsePrefix("fd00:5::/48"), 64
		addrs = append(addrs, h.pub6)
	}
	b, err := New(backend.Options{
		Log:            slog.New(slog.NewMultiHandler(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: testLogLevel}), h.warns)),
		Handle:         h.ns.Handle,
		Netns:          h.ns.Netns,
		Ext:            backendtest.Ext(t, h.ns, "eth0", addrs...),
		Config:         cfg,
		ResyncInterval: resync,
		NoRepair:       h.noRepair,
	}, Options{Impl: h.impl, SocketDir: h.sockDir, KeyFile: h.keyFile})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// lease is h's lease as the other hosts see it.
func (h *host) lease() *lease.Lease {
	data, _ := h.b.BackendData()
	l := &lease.Lease{Subnet: h.subnet, CreateRevision: int64(h.subnet.Addr().As4()[2]),
		Attrs: lease.LeaseAttrs{PublicIP: h.pub, BackendType: Type, BackendData: data}}
	if h.subnet6.IsValid() {
		l.IPv6Subnet, l.Attrs.PublicIPv6 = h.subnet6, h.pub6
		l.Attrs.BackendV6Data, _ = h.b.BackendV6Data()
	}
	return l
}

func snapshot(leases ...*lease.Lease) *lease.Batch {
	b := &lease.Batch{Snapshot: true}
	for _, l := range leases {
		b.Events = append(b.Events, lease.Event{Type: lease.EventAdded, Lease: *l})
	}
	return b
}

func event(typ lease.EventType, l *lease.Lease) *lease.Batch {
	return &lease.Batch{Events: []lease.Event{{Type: typ, Lease: *l}}}
}

// ping pings addr once from h's namespace.
func (h *host) ping(addr string) error {
	out, err := h.ns.Try("ping", "-c1", "-W1", addr)
	if err != nil {
		return fmt.Errorf("ping %s from %s: %v: %s", addr, h.ns.Name, err, out)
	}
	return nil
}

// peers is the IPv4 device's peers as "<public key> <allowed IPs>",
// sorted.
func (h *host) peers(t *testing.T) []string {
	t.Helper()
	return h.devicePeers(t, DeviceName)
}

// devicePeers is peers of the device name.
func (h *host) devicePeers(t *testing.T, name string) []string {
	t.Helper()
	dev, err := h.deviceNamed(name)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, p := range dev.Peers {
		var allowed []string
		for _, n := range p.AllowedIPs {
			allowed = append(allowed, n.String())
		}
		slices.Sort(allowed)
		out = append(out, p.PublicKey.String()+" "+strings.Join(allowed, ","))
	}
	slices.Sort(out)
	return out
}

// device reads h's IPv4 device.
func (h *host) device() (*wgtypes.Device, error) { return h.deviceNamed(DeviceName) }

// deviceNamed reads h's device name.
func (h *host) deviceNamed(name string) (*wgtypes.Device, error) {
	i := slices.IndexFunc(h.b.tunnels, func(t *tunnel) bool { return t.name == name })
	if i < 0 {
		return nil, fmt.Errorf("the backend has no device %s", name)
	}
	im := h.b.tunnels[i].current()
	if im == nil {
		return nil, errors.New("no implementation chosen yet")
	}
	return im.device()
}

// configure configures h's IPv4 device behind the backend's back, as `wg
// set` would.
func (h *host) configure(t *testing.T, cfg wgtypes.Config) {
	t.Helper()
	if err := h.b.tunnels[0].current().configure(cfg); err != nil {
		t.Fatal(err)
	}
}

// peerLine is h as a line of peers.
func (h *host) peerLine() string { return h.b.PublicKey() + " " + h.subnet.String() }

// overlay is h's own address on its device.
func (h *host) overlay() string { return h.subnet.Addr().String() }

func (h *host) waitPeers(t *testing.T, what string, want ...string) {
	t.Helper()
	h.waitDevicePeers(t, DeviceName, what, want...)
}

// waitDevicePeers waits until the device name's peers are want.
func (h *host) waitDevicePeers(t *testing.T, name, what string, want ...string) {
	t.Helper()
	slices.Sort(want)
	await.Eventually(t, wait, what, func() error {
		if _, err := h.deviceNamed(name); err != nil {
			return err
		}
		if got := h.devicePeers(t, name); !slices.Equal(got, want) {
			return fmt.Errorf("peers %q, want %q", got, want)
		}
		return nil
	})
}

func (h *host) repairs(kind string) uint64 { return h.b.Status().Counters.Repairs[kind] }

func TestPingThroughTunnel(t *testing.T) {
	a, b := pair(t, `{"Type":"wireguard","PSK":"`+testPSK+`"}`, time.Hour)
	await.Eventually(t, wait, "B reachable from A through flannel-wg", func() error { return a.ping(b.overlay()) })
	if err := b.ping(a.overlay()); err != nil {
		t.Fatal(err)
	}

	// Kernel state: the address, one route for the network, the MTU.
	l := a.ns.Link(t, DeviceName)
	if l.Type() != "tuntap" || l.Attrs().MTU != 1500-80 {
		t.Errorf("%s: type %s MTU %d, want a TUN with MTU 1420", DeviceName, l.Type(), l.Attrs().MTU)
	}
	routes, err := backendtest.OwnRoutes(a.ns.Handle, netlink.FAMILY_V4)
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"10.5.0.0/16 via <nil> dev flannel-wg"}; !slices.Equal(routes, want) {
		t.Errorf("routes %q, want %q", routes, want)
	}
	// The peer: endpoint, AllowedIPs, PSK.
	dev, err := a.device()
	if err != nil {
		t.Fatal(err)
	}
	psk, _ := wgtypes.ParseKey(testPSK)
	if len(dev.Peers) != 1 || dev.Peers[0].Endpoint.String() != "192.168.77.2:51820" || dev.Peers[0].PresharedKey != psk {
		t.Fatalf("peers %+v: want B at 192.168.77.2:51820 with the PSK", dev.Peers)
	}
	// Status: the implementation, the key, the handshake.
	st := a.b.Status()
	if len(st.WireGuard) != 1 || st.WireGuard[0].Impl != ImplUserspace || st.WireGuard[0].PublicKey != a.b.PublicKey() {
		t.Errorf("status devices %+v", st.WireGuard)
	}
	if len(st.Peers) != 1 || st.Peers[0].WireGuard == nil || st.Peers[0].WireGuard.LatestHandshake.IsZero() || !st.Peers[0].Programmed {
		t.Errorf("status peers %+v: want B programmed with a handshake", st.Peers)
	}
	// wg show answers through the UAPI socket of the host's directory.
	if _, err := os.Stat(filepath.Join(a.sockDir, DeviceName+".sock")); err != nil {
		t.Errorf("UAPI socket: %v", err)
	}
}

func TestRepairs(t *testing.T) {
	a, b := pair(t, `{"Type":"wireguard"}`, time.Second)
	await.Eventually(t, wait, "B reachable from A", func() error { return a.ping(b.overlay()) })

	// The device deleted: made again, with its address, route and peers.
	a.ns.IP(t, "link", "del", DeviceName)
	await.Eventually(t, wait, "device repaired on A", await.True(func() bool { return a.repairs("device") > 0 }))
	await.Eventually(t, wait, "B reachable from A after the repair", func() error { return a.ping(b.overlay()) })

	// The route deleted: put back.
	a.ns.IP(t, "route", "del", "10.5.0.0/16", "dev", DeviceName)
	await.Eventually(t, wait, "route repaired on A", await.True(func() bool { return a.repairs("route") > 0 }))
	await.Eventually(t, wait, "B reachable from A after the route repair", func() error { return a.ping(b.overlay()) })

	// The peer removed behind the agent's back (as `wg set ... peer X
	// remove` does): added again by the periodic pass.
	k, _ := wgtypes.ParseKey(b.b.PublicKey())
	a.configure(t, wgtypes.Config{Peers: []wgtypes.PeerConfig{{PublicKey: k, Remove: true}}})
	await.Eventually(t, wait, "peer repaired on A", await.True(func() bool { return a.repairs("peer") > 0 }))
	a.waitPeers(t, "B back on A's device", b.peerLine())

	// A stranger's peer is pruned.
	stranger, _ := wgtypes.GeneratePrivateKey()
	a.configure(t, wgtypes.Config{Peers: []wgtypes.PeerConfig{{PublicKey: stranger.PublicKey()}}})
	a.waitPeers(t, "stranger pruned from A's device", b.peerLine())
}

func TestLeaseEvents(t *testing.T) {
	a, b := pair(t, `{"Type":"wireguard"}`, time.Hour)
	a.waitPeers(t, "B on A's device", b.peerLine())

	// Lease removed: the peer and its AllowedIPs go.
	a.updates <- backend.Update{Batch: event(lease.EventRemoved, b.lease())}
	a.waitPeers(t, "B gone from A's device")

	// Back, then re-keyed: the old key's peer replaced by the new one.
	a.updates <- backend.Update{Batch: event(lease.EventAdded, b.lease())}
	a.waitPeers(t, "B back on A's device", b.peerLine())
	newKey, _ := wgtypes.GeneratePrivateKey()
	rekeyed := b.lease()
	rekeyed.Attrs.BackendData, _ = json.Marshal(PeerData{PublicKey: newKey.PublicKey(), Port: 51820})
	a.updates <- backend.Update{Batch: event(lease.EventAdded, rekeyed)}
	a.waitPeers(t, "B's new key on A's device", newKey.PublicKey().String()+" 10.5.2.0/24")
}

func TestRefusedLeases(t *testing.T) {
	a, b := pair(t, `{"Type":"wireguard"}`, time.Hour)
	a.waitPeers(t, "B on A's device", b.peerLine())

	bad := func(sub, pub, data string) *lease.Lease {
		return &lease.Lease{Subnet: netip.MustParsePrefix(sub), CreateRevision: 100,
			Attrs: lease.LeaseAttrs{PublicIP: netip.MustParseAddr(pub), BackendType: Type, BackendData: json.RawMessage(data)}}
	}
	// Malformed: refused with a warning, never programmed.
	for _, l := range []*lease.Lease{
		bad("10.5.3.0/24", "192.168.77.3", `{"PublicKey":"c2hvcnQ=","Port":51820}`),
		bad("10.5.4.0/24", "192.168.77.4", `{"PublicKey":"`+testPub+`","Port":0}`),
		bad("10.5.5.0/24", "192.168.77.5", `{"PublicKey":"`+testPub+`","Port":70000}`),
		bad("10.5.6.0/24", "192.168.77.6", `{"VNI":1,"VtepMAC":"02:00:00:00:00:01"}`),
	} {
		a.updates <- backend.Update{Batch: event(lease.EventAdded, l)}
	}
	// Another host claiming B's key: refused, B keeps it.
	thief := bad("10.5.7.0/24", "192.168.77.7", string(b.lease().Attrs.BackendData))
	a.updates <- backend.Update{Batch: event(lease.EventAdded, thief)}
	await.Eventually(t, wait, "the key thief refused on A", func() error {
		st := a.b.Status()
		if len(st.Refused) != 1 || st.Refused[0].Key != thief.Key() || st.Refused[0].Reason != backend.RefusedIdentity {
			return fmt.Errorf("refused %+v", st.Refused)
		}
		return nil
	})
	if got := a.peers(t); !slices.Equal(got, []string{b.peerLine()}) {
		t.Errorf("peers %q: want B alone", got)
	}
	if st := a.b.Status(); len(st.Peers) != 1 {
		t.Errorf("status peers %+v: want B alone", st.Peers)
	}
}

func TestRestartKeepsDevice(t *testing.T) {
	a, b := pair(t, `{"Type":"wireguard"}`, time.Hour)
	await.Eventually(t, wait, "B reachable from A", func() error { return a.ping(b.overlay()) })
	idx := a.ns.Link(t, DeviceName).Attrs().Index
	key := a.b.PublicKey()

	a.stop()
	// The persistent TUN, its address and route stay without an agent.
	if l := a.ns.Link(t, DeviceName); l.Attrs().Index != idx {
		t.Fatalf("device index %d after stop, want %d", l.Attrs().Index, idx)
	}
	if routes, _ := backendtest.OwnRoutes(a.ns.Handle, netlink.FAMILY_V4); len(routes) != 1 {
		t.Errorf("routes %q after stop, want the overlay route", routes)
	}

	a.start(t, `{"Type":"wireguard"}`, time.Hour)
	if a.b.PublicKey() != key {
		t.Fatalf("public key %s after restart, want %s (the key file's)", a.b.PublicKey(), key)
	}
	a.updates <- backend.Update{Own: a.lease(), Batch: snapshot(b.lease())}
	await.Eventually(t, wait, "B reachable from A after the restart", func() error { return a.ping(b.overlay()) })
	if l := a.ns.Link(t, DeviceName); l.Attrs().Index != idx {
		t.Errorf("device index %d after restart, want %d: the agent must re-attach, not re-create", l.Attrs().Index, idx)
	}
	if st := a.b.Status(); st.WireGuard[0].Impl != ImplUserspace || !strings.Contains(st.WireGuard[0].ImplReason, "userspace") {
		t.Errorf("status %+v", st.WireGuard)
	}
}
