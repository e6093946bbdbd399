package vxlan

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/netagent/netagent/backend"
	"github.com/netagent/netagent/backend/backendtest"
	"github.com/netagent/netagent/iface"
	"github.com/netagent/netagent/internal/await"
	"github.com/netagent/netagent/internal/nstest"
	"github.com/netagent/netagent/lease"
)

var (
	ownSubnet   = netip.MustParsePrefix("10.5.1.0/24")
	hostA       = netip.MustParseAddr("192.168.77.1")
	hostB       = netip.MustParseAddr("192.168.77.2")
	ownSubnetV6 = netip.MustParsePrefix("fc00:0:0:1::/64")
	hostAV6     = netip.MustParseAddr("fd77::1")
	hostBV6     = netip.MustParseAddr("fd77::2")
)

// env is host A (where the backend runs) joined to host B by a veth pair,
// "eth0" at both ends (nstest.Underlay).
type env struct {
	a, b *nstest.NS
	ext  iface.External
}

// newEnv is an env with IPv4 underlay addresses 192.168.77.1/24 and .2/24.
func newEnv(t *testing.T) *env { return newEnvFamilies(t, true, false) }

// newEnvFamilies is an env with the underlay addresses of the given
// families: 192.168.77.1/24 and .2/24 for IPv4, fd77::1/64 and fd77::2/64
// for IPv6.
func newEnvFamilies(t *testing.T, v4, v6 bool) *env {
	t.Helper()
	e := &env{}
	e.a, e.b = nstest.Underlay(t)
	var addrs []netip.Addr
	if v4 {
		e.a.AddrAdd(t, "eth0", "192.168.77.1/24")
		e.b.AddrAdd(t, "eth0", "192.168.77.2/24")
		addrs = append(addrs, hostA)
	}
	if v6 {
		e.a.AddrAdd(t, "eth0", "fd77::1/64")
		e.b.AddrAdd(t, "eth0", "fd77::2/64")
		addrs = append(addrs, hostAV6)
	}
	e.ext = backendtest.Ext(t, e.a, "eth0", addrs...)
	return e
}

// running is a Backend running in a goroutine.
type running struct {
	*Backend
	updates chan<- backend.Update
	stop    func()
}

// start runs an IPv4-only backend in ns with the given backend settings.
func start(t *testing.T, ns *nstest.NS, ext iface.External, backendJSON string) *running {
	t.Helper()
	return startConfig(t, ns, ext, &lease.Config{BackendType: Type, Backend: json.RawMessage(backendJSON)})
}

// startConfig runs a backend in ns with network config cfg.
func startConfig(t *testing.T, ns *nstest.NS, ext iface.External, cfg *lease.Config) *running {
	t.Helper()
	b, err := New(backend.Options{
		Log:            slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})),
		Handle:         ns.Handle,
		Netns:          ns.Netns,
		Ext:            ext,
		Config:         cfg,
		ResyncInterval: time.Hour, // repairs must come from notifications
	})
	if err != nil {
		t.Fatal(err)
	}
	r := &running{Backend: b}
	r.updates, r.stop = backendtest.Start(t, b)
	return r
}

// startWithPeerB runs an IPv4-only backend on host A with one peer, host
// B (10.5.2.0/24, VTEP MAC macB), and waits for B's entries on flannel.1.
func (e *env) startWithPeerB(t *testing.T) *running {
	t.Helper()
	r := start(t, e.a, e.ext, `{"Type":"vxlan"}`)
	r.updates <- backend.Update{Own: own(), Batch: snapshot(peerLease("10.5.2.0/24", "192.168.77.2", macB))}
	waitEntries(t, e.a, "flannel.1", vx("10.5.2.0/24", "192.168.77.2", macB), settle)
	return r
}

func own() *lease.Lease {
	return &lease.Lease{Subnet: ownSubnet, Attrs: lease.LeaseAttrs{PublicIP: hostA, BackendType: Type}}
}

// peerLease is an IPv4-only lease of a peer with VTEP MAC mac.
func peerLease(sub, pub, mac string) lease.Lease { return dualLease(sub, pub, mac, "", "", "") }

// dualLease is a lease with the given families (an empty subnet string
// leaves the family out) and VTEP MACs.
func dualLease(sub, pub, mac, sub6, pub6, mac6 string) lease.Lease {
	l := lease.Lease{Attrs: lease.LeaseAttrs{BackendType: Type}}
	if sub != "" {
		l.Subnet = netip.MustParsePrefix(sub)
		l.Attrs.PublicIP = netip.MustParseAddr(pub)
		l.Attrs.BackendData = json.RawMessage(`{"VNI":1,"VtepMAC":"` + mac + `"}`)
	}
	if sub6 != "" {
		l.IPv6Subnet = netip.MustParsePrefix(sub6)
		l.Attrs.PublicIPv6 = netip.MustParseAddr(pub6)
		l.Attrs.BackendV6Data = json.RawMessage(`{"VNI":1,"VtepMAC":"` + mac6 + `"}`)
	}
	return l
}

func snapshot(leases ...lease.Lease) *lease.Batch {
	b := &lease.Batch{Snapshot: true}
	for _, l := range leases {
		b.Events = append(b.Events, lease.Event{Type: lease.EventAdded, Lease: l})
	}
	return b
}

func event(typ lease.EventType, l lease.Lease) *lease.Batch {
	return &lease.Batch{Events: []lease.Event{{Type: typ, Lease: l}}}
}

// entries is the kernel state the backend is responsible for, as strings.
type entries struct {
	routes, neighs, fdbs []string
}

func (e entries) String() string {
	return fmt.Sprintf("routes %q\nneighs %q\nfdbs %q", e.routes, e.neighs, e.fdbs)
}

func (e entries) equal(o entries) bool {
	return slices.Equal(e.routes, o.routes) && slices.Equal(e.neighs, o.neighs) && slices.Equal(e.fdbs, o.fdbs)
}

// read lists the routes of family with the backend's protocol (in
// backendtest.OwnRoutes form) and the permanent neighbours of family and
// fdb entries of dev.
func read(h *netlink.Handle, dev string, family int) (entries, error) {
	var e entries
	var err error
	if e.routes, err = backendtest.OwnRoutes(h, family); err != nil {
		return e, err
	}
	link, err := h.LinkByName(dev)
	if err != nil {
		return e, err
	}
	neighs, err := h.NeighList(link.Attrs().Index, family)
	if err != nil {
		return e, err
	}
	for _, n := range neighs {
		if n.State == netlink.NUD_PERMANENT {
			e.neighs = append(e.neighs, fmt.Sprintf("%s lladdr %s", n.IP, n.HardwareAddr))
		}
	}
	fdbs, err := h.NeighList(link.Attrs().Index, syscall.AF_BRIDGE)
	if err != nil {
		return e, err
	}
	for _, f := range fdbs {
		if f.State == netlink.NUD_PERMANENT && f.IP != nil && f.HardwareAddr[0]&1 == 0 {
			e.fdbs = append(e.fdbs, fmt.Sprintf("%s dst %s", f.HardwareAddr, f.IP))
		}
	}
	slices.Sort(e.neighs)
	slices.Sort(e.fdbs)
	return e, nil
}

// vx is the expected entries of a vxlan-mode peer on flannel.1.
func vx(sub, pub, mac string) entries { return vxOn("flannel.1", sub, pub, mac) }

// vxOn is the expected entries of a vxlan-mode peer on device dev.
func vxOn(dev, sub, pub, mac string) entries {
	p := netip.MustParsePrefix(sub)
	return entries{
		routes: []string{fmt.Sprintf("%s via %s dev %s onlink", p, p.Addr(), dev)},
		neighs: []string{fmt.Sprintf("%s lladdr %s", p.Addr(), mac)},
		fdbs:   []string{fmt.Sprintf("%s dst %s", mac, pub)},
	}
}

func merge(es ...entries) entries {
	var m entries
	for _, e := range es {
		m.routes = append(m.routes, e.routes...)
		m.neighs = append(m.neighs, e.neighs...)
		m.fdbs = append(m.fdbs, e.fdbs...)
	}
	slices.Sort(m.routes)
	slices.Sort(m.neighs)
	slices.Sort(m.fdbs)
	return m
}

// settle bounds how long a test waits for the kernel to show what the
// backend was told or how it repaired a change. It only bounds a hang: the
// engine acts on a notification at once and retries a failed peer after
// 1 s, then 2 s, and a loaded machine can delay either by seconds.
const settle = time.Minute

// waitEntries waits for the IPv4 entries of dev in ns to be want.
func waitEntries(t *testing.T, ns *nstest.NS, dev string, want entries, timeout time.Duration) {
	t.Helper()
	waitFamily(t, ns, dev, netlink.FAMILY_V4, want, timeout)
}

// waitFamily waits for the entries of family on dev in ns to be want.
func waitFamily(t *testing.T, ns *nstest.NS, dev string, family int, want entries, timeout time.Duration) {
	t.Helper()
	await.Eventually(t, timeout, "kernel entries", func() error {
		got, err := read(ns.Handle, dev, family)
		if err != nil {
			return err
		}
		if !got.equal(want) {
			return fmt.Errorf("kernel has\n%s\nwant\n%s", got, want)
		}
		return nil
	})
}

const (
	macB = "3e:5b:b9:8d:d6:4d"
	macC = "3e:5b:b9:8d:d6:4e"
	macD = "3e:5b:b9:8d:d6:4f"
)

func TestSnapshotProgramsDeviceAndPeers(t *testing.T) {
	e := newEnv(t)
	r := start(t, e.a, e.ext, `{"Type":"vxlan"}`)
	leases := []lease.Lease{
		peerLease("10.5.2.0/24", "192.168.77.2", macB),
		peerLease("10.5.3.0/24", "192.168.77.3", macC),
		// Ignored: own subnet, another backend type, malformed data.
		*own(),
		{Subnet: netip.MustParsePrefix("10.5.4.0/24"), Attrs: lease.LeaseAttrs{PublicIP: netip.MustParseAddr("192.168.77.4"), BackendType: "host-gw"}},
		peerLease("10.5.5.0/24", "192.168.77.5", "ff:ff:ff:ff:ff:ff"),
	}
	r.updates <- backend.Update{Own: own(), Batch: snapshot(leases...)}
	want := merge(vx("10.5.2.0/24", "192.168.77.2", macB), vx("10.5.3.0/24", "192.168.77.3", macC))
	waitEntries(t, e.a, "flannel.1", want, settle)

	link := e.a.Link(t, "flannel.1")
	v, ok := link.(*netlink.Vxlan)
	if !ok {
		t.Fatalf("flannel.1 is a %s, want vxlan", link.Type())
	}
	if v.VxlanId != 1 || !v.SrcAddr.Equal(net.IP(hostA.AsSlice())) || v.VtepDevIndex != e.ext.Index ||
		v.Port != 8472 || v.Learning || v.GBP {
		t.Errorf("flannel.1 = id %d local %s dev %d port %d learning %t gbp %t; want id 1 local %s dev %d port 8472 nolearning",
			v.VxlanId, v.SrcAddr, v.VtepDevIndex, v.Port, v.Learning, v.GBP, hostA, e.ext.Index)
	}
	if v.MTU != 1450 || v.HardwareAddr.String() != VtepMAC(hostA, 1).String() || v.Flags&net.FlagUp == 0 {
		t.Errorf("flannel.1 mtu %d mac %s flags %v; want mtu 1450 mac %s up", v.MTU, v.HardwareAddr, v.Flags, VtepMAC(hostA, 1))
	}
	addrs, err := e.a.Handle.AddrList(link, netlink.FAMILY_V4)
	if err != nil || len(addrs) != 1 || addrs[0].IPNet.String() != "10.5.1.0/32" {
		t.Errorf("flannel.1 addresses %v, %v; want only 10.5.1.0/32", addrs, err)
	}

	// The pass records what it did after the kernel has it.
	var st backend.Status
	await.Eventually(t, settle, "status of the first pass", func() error {
		st = r.Status()
		if st.Device != "flannel.1" || st.MTU != 1450 || len(st.Peers) != 2 || !st.Peers[0].Programmed || st.Peers[0].Mode != backend.ModeVXLAN {
			return fmt.Errorf("Status = %+v", st)
		}
		return nil
	})

	// The same input again changes nothing.
	passes := st.Counters.Passes
	r.updates <- backend.Update{Batch: snapshot(leases...)}
	await.Eventually(t, settle, "another pass over the same input", func() error {
		if p := r.Status().Counters.Passes; p <= passes {
			return fmt.Errorf("passes %d, want > %d", p, passes)
		}
		return nil
	})
	got, err := read(e.a.Handle, "flannel.1", netlink.FAMILY_V4)
	if err != nil || !got.equal(want) {
		t.Errorf("after the same snapshot again: %v\n%s", err, got)
	}
	if n := r.Status().Counters.Repairs; len(n) != 0 && (n["route"]+n["neigh"]+n["fdb"]+n["device"]+n["address"]) != 0 {
		t.Errorf("repairs after an unchanged snapshot: %v", n)
	}
}

// TestSnapshotManyPeers: a first pass with more ops than a pass sends at
// once (three a peer) programs every peer, in the chunks it sends, and
// reports each programmed without errors.
func TestSnapshotManyPeers(t *testing.T) {
	e := newEnv(t)
	r := start(t, e.a, e.ext, `{"Type":"vxlan"}`)
	const n = 1000
	leases := []lease.Lease{*own()}
	var want []entries
	for i := range n {
		sub := fmt.Sprintf("10.%d.%d.0/24", 6+i/256, i%256)
		mac := fmt.Sprintf("3e:5b:b9:8e:%02x:%02x", i/256, i%256)
		leases = append(leases, peerLease(sub, "192.168.77.2", mac))
		want = append(want, vx(sub, "192.168.77.2", mac))
	}
	r.updates <- backend.Update{Own: own(), Batch: snapshot(leases...)}
	waitEntries(t, e.a, "flannel.1", merge(want...), settle)
	await.Eventually(t, settle, "every peer programmed", func() error {
		st := r.Status()
		programmed := 0
		for _, p := range st.Peers {
			if p.Programmed {
				programmed++
			}
		}
		if programmed != n || st.Counters.NetlinkErrors != 0 {
			return fmt.Errorf("%d of %d peers programmed, %d netlink errors", programmed, len(st.Peers), st.Counters.NetlinkErrors)
		}
		return nil
	})
}

func TestPeerEvents(t *testing.T) {
	e := newEnv(t)
	r := e.startWithPeerB(t)

	steps := []struct {
		name  string
		batch *lease.Batch
		want  entries
	}{
		{"peer added", event(lease.EventAdded, peerLease("10.5.3.0/24", "192.168.77.3", macC)),
			merge(vx("10.5.2.0/24", "192.168.77.2", macB), vx("10.5.3.0/24", "192.168.77.3", macC))},
		{"VtepMAC changed", event(lease.EventAdded, peerLease("10.5.3.0/24", "192.168.77.3", macD)),
			merge(vx("10.5.2.0/24", "192.168.77.2", macB), vx("10.5.3.0/24", "192.168.77.3", macD))},
		{"PublicIP changed", event(lease.EventAdded, peerLease("10.5.3.0/24", "192.168.77.9", macD)),
			merge(vx("10.5.2.0/24", "192.168.77.2", macB), vx("10.5.3.0/24", "192.168.77.9", macD))},
		{"peer removed", event(lease.EventRemoved, lease.Lease{Subnet: netip.MustParsePrefix("10.5.2.0/24")}),
			vx("10.5.3.0/24", "192.168.77.9", macD)},
		{"changed to another backend type", event(lease.EventAdded, lease.Lease{Subnet: netip.MustParsePrefix("10.5.3.0/24"),
			Attrs: lease.LeaseAttrs{PublicIP: netip.MustParseAddr("192.168.77.9"), BackendType: "host-gw"}}),
			entries{}},
	}
	for _, s := range steps {
		r.updates <- backend.Update{Batch: s.batch}
		t.Run(s.name, func(t *testing.T) { waitEntries(t, e.a, "flannel.1", s.want, settle) })
	}
}

func TestPrunesStaleAndAdopts(t *testing.T) {
	e := newEnv(t)
	// Left over from an earlier run: a compatible device with a wrong MTU
	// and a stray address, entries of a peer that left meanwhile.
	e.a.IP(t, "link", "add", "flannel.1", "type", "vxlan", "id", "1", "local", "192.168.77.1", "dev", "eth0", "dstport", "8472", "nolearning")
	e.a.IP(t, "link", "set", "flannel.1", "mtu", "1400", "up")
	e.a.IP(t, "addr", "add", "10.5.200.0/32", "dev", "flannel.1")
	e.a.IP(t, "route", "add", "10.5.99.0/24", "via", "10.5.99.0", "dev", "flannel.1", "onlink", "proto", "78")
	e.a.IP(t, "neigh", "add", "10.5.99.0", "lladdr", "02:00:00:00:00:99", "dev", "flannel.1", "nud", "permanent")
	e.a.Cmd(t, "bridge", "fdb", "add", "02:00:00:00:00:99", "dev", "flannel.1", "dst", "192.168.77.99", "self", "permanent")
	// Someone else's route, not to be touched.
	e.a.IP(t, "route", "add", "10.9.0.0/24", "via", "192.168.77.2", "dev", "eth0", "proto", "static")
	before := e.a.Link(t, "flannel.1")

	e.startWithPeerB(t)

	after := e.a.Link(t, "flannel.1")
	if after.Attrs().Index != before.Attrs().Index {
		t.Errorf("compatible device replaced: index %d, was %d", after.Attrs().Index, before.Attrs().Index)
	}
	if after.Attrs().MTU != 1450 || after.Attrs().HardwareAddr.String() != VtepMAC(hostA, 1).String() {
		t.Errorf("adopted device mtu %d mac %s; want 1450 %s", after.Attrs().MTU, after.Attrs().HardwareAddr, VtepMAC(hostA, 1))
	}
	if out := e.a.IP(t, "-4", "addr", "show", "dev", "flannel.1"); strings.Contains(out, "10.5.200.0") || !strings.Contains(out, "10.5.1.0/32") {
		t.Errorf("addresses not corrected:\n%s", out)
	}
	if out := e.a.IP(t, "route", "show", "10.9.0.0/24"); !strings.Contains(out, "via 192.168.77.2 dev eth0 proto static") {
		t.Errorf("foreign route touched: %q", out)
	}
}

func TestReplacesIncompatibleDevice(t *testing.T) {
	e := newEnv(t)
	e.a.IP(t, "link", "add", "flannel.1", "type", "vxlan", "id", "7", "local", "192.168.77.1", "dev", "eth0", "dstport", "4789")
	before := e.a.Link(t, "flannel.1")
	e.startWithPeerB(t)
	after := e.a.Link(t, "flannel.1")
	v := after.(*netlink.Vxlan)
	if after.Attrs().Index == before.Attrs().Index || v.VxlanId != 1 || v.Port != 8472 {
		t.Errorf("incompatible device kept: index %d (was %d) id %d port %d", after.Attrs().Index, before.Attrs().Index, v.VxlanId, v.Port)
	}
}

func TestRepairs(t *testing.T) {
	e := newEnv(t)
	r := start(t, e.a, e.ext, `{"Type":"vxlan"}`)
	r.updates <- backend.Update{Own: own(), Batch: snapshot(
		peerLease("10.5.2.0/24", "192.168.77.2", macB), peerLease("10.5.3.0/24", "192.168.77.3", macC))}
	want := merge(vx("10.5.2.0/24", "192.168.77.2", macB), vx("10.5.3.0/24", "192.168.77.3", macC))
	waitEntries(t, e.a, "flannel.1", want, settle)
	mac := VtepMAC(hostA, 1).String()

	damage := []struct {
		name string
		cmd  []string
	}{
		{"route deleted", []string{"ip", "route", "del", "10.5.2.0/24"}},
		{"neighbour deleted", []string{"ip", "neigh", "del", "10.5.3.0", "dev", "flannel.1"}},
		{"neighbour changed", []string{"ip", "neigh", "replace", "10.5.3.0", "lladdr", "02:11:11:11:11:11", "dev", "flannel.1", "nud", "permanent"}},
		{"fdb deleted", []string{"bridge", "fdb", "del", macB, "dev", "flannel.1", "dst", "192.168.77.2", "self"}},
		{"stray route added", []string{"ip", "route", "add", "10.5.77.0/24", "via", "10.5.77.0", "dev", "flannel.1", "onlink", "proto", "78"}},
		{"address deleted", []string{"ip", "addr", "del", "10.5.1.0/32", "dev", "flannel.1"}},
		{"MTU changed", []string{"ip", "link", "set", "flannel.1", "mtu", "1300"}},
		{"device deleted", []string{"ip", "link", "del", "flannel.1"}},
	}
	for _, d := range damage {
		t.Run(d.name, func(t *testing.T) {
			e.a.Cmd(t, d.cmd[0], d.cmd[1:]...)
			waitEntries(t, e.a, "flannel.1", want, settle)
			await.Eventually(t, settle, "the repaired device's MAC, MTU and address", func() error {
				l, err := e.a.Handle.LinkByName("flannel.1")
				if err != nil {
					return err
				}
				if l.Attrs().HardwareAddr.String() != mac || l.Attrs().MTU != 1450 {
					return fmt.Errorf("flannel.1 mac %s mtu %d, want %s 1450", l.Attrs().HardwareAddr, l.Attrs().MTU, mac)
				}
				if out := e.a.IP(t, "-4", "addr", "show", "dev", "flannel.1"); !strings.Contains(out, "10.5.1.0/32") {
					return fmt.Errorf("address missing:\n%s", out)
				}
				return nil
			})
		})
	}
	// The last repair's pass counts it after the kernel has it.
	await.Eventually(t, settle, "every kind of repair counted", func() error {
		c := r.Status().Counters
		for _, kind := range []string{"route", "neigh", "fdb", "device", "address"} {
			if c.Repairs[kind] == 0 {
				return fmt.Errorf("no %s repair counted: %v", kind, c.Repairs)
			}
		}
		return nil
	})
}

// TestRepairKeepsStatusPeers: a pass that repairs a peer's entry and leaves
// every peer as it was shown (programmed, no error) does not build Status's
// peers again: the agent's probers compare them after every pass, and
// rebuilding 5,000 of them each resync was garbage for nothing.
func TestRepairKeepsStatusPeers(t *testing.T) {
	e := newEnv(t)
	r := e.startWithPeerB(t)
	var before backend.Status
	await.Eventually(t, settle, "peer B programmed", func() error {
		before = r.Status()
		if len(before.Peers) != 1 || !before.Peers[0].Programmed {
			return fmt.Errorf("peers %+v", before.Peers)
		}
		return nil
	})
	e.a.Cmd(t, "ip", "neigh", "del", "10.5.2.0", "dev", "flannel.1")
	await.Eventually(t, settle, "the neighbour's repair counted", func() error {
		if n := r.Status().Counters.Repairs["neigh"]; n == 0 {
			return errors.New("no neighbour repair counted")
		}
		return nil
	})
	after := r.Status()
	if len(after.Peers) != 1 || &after.Peers[0] != &before.Peers[0] {
		t.Errorf("Status's peers were built again by a pass that changed none of them: %+v", after.Peers)
	}
}

func TestMACStableAcrossRestart(t *testing.T) {
	e := newEnv(t)
	r := e.startWithPeerB(t)
	r.stop()
	e.a.IP(t, "link", "del", "flannel.1")

	r2 := e.startWithPeerB(t)
	if got := e.a.Link(t, "flannel.1").Attrs().HardwareAddr.String(); got != r.VtepMAC().String() || got != r2.VtepMAC().String() {
		t.Errorf("MAC after restart %s, before %s", got, r.VtepMAC())
	}
}

func TestDirectRouting(t *testing.T) {
	e := newEnv(t)
	// 192.168.88.0/24 is reached through a gateway on the underlay.
	e.a.IP(t, "route", "add", "192.168.88.0/24", "via", "192.168.77.2")
	r := start(t, e.a, e.ext, `{"Type":"vxlan","DirectRouting":true}`)
	r.updates <- backend.Update{Own: own(), Batch: snapshot(
		peerLease("10.5.2.0/24", "192.168.77.2", macB), peerLease("10.5.3.0/24", "192.168.88.5", macC))}
	direct2 := entries{routes: []string{"10.5.2.0/24 via 192.168.77.2 dev eth0"}}
	waitEntries(t, e.a, "flannel.1", merge(direct2, vx("10.5.3.0/24", "192.168.88.5", macC)), settle)

	// Ext gets an address on the second peer's subnet: it goes direct too.
	e.a.AddrAdd(t, "eth0", "192.168.88.1/24")
	both := entries{routes: []string{"10.5.2.0/24 via 192.168.77.2 dev eth0", "10.5.3.0/24 via 192.168.88.5 dev eth0"}}
	waitEntries(t, e.a, "flannel.1", both, settle)
	await.Eventually(t, settle, "peer 2 in direct mode", func() error {
		if st := r.Status(); len(st.Peers) != 2 || st.Peers[1].Mode != backend.ModeDirect {
			return fmt.Errorf("peers %+v, want peer 2 direct", st.Peers)
		}
		return nil
	})

	// And back when the address goes.
	e.a.IP(t, "addr", "del", "192.168.88.1/24", "dev", "eth0")
	e.a.IP(t, "route", "replace", "192.168.88.0/24", "via", "192.168.77.2")
	waitEntries(t, e.a, "flannel.1", merge(direct2, vx("10.5.3.0/24", "192.168.88.5", macC)), settle)
}

func TestPingOverVXLAN(t *testing.T) {
	e := newEnv(t)
	ra := start(t, e.a, e.ext, `{"Type":"vxlan"}`)
	extB := backendtest.Ext(t, e.b, "eth0", hostB)
	rb := start(t, e.b, extB, `{"Type":"vxlan"}`)
	la := peerLease("10.5.1.0/24", "192.168.77.1", ra.VtepMAC().String())
	lb := peerLease("10.5.2.0/24", "192.168.77.2", rb.VtepMAC().String())
	ra.updates <- backend.Update{Own: &la, Batch: snapshot(la, lb)}
	rb.updates <- backend.Update{Own: &lb, Batch: snapshot(la, lb)}
	waitEntries(t, e.a, "flannel.1", vx("10.5.2.0/24", "192.168.77.2", rb.VtepMAC().String()), settle)
	waitEntries(t, e.b, "flannel.1", vx("10.5.1.0/24", "192.168.77.1", ra.VtepMAC().String()), settle)
	// From A's overlay address to B's, bounded: 3 packets, an answer to
	// any of them within 30 s (a loaded machine is slow, not lossy).
	e.a.Exec(t, "ping", "-c", "3", "-W", "30", "-I", "10.5.1.0", "10.5.2.0")
}
