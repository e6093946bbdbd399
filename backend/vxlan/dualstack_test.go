package vxlan

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"strings"
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

// startFamilies runs a backend in ns with the given families enabled.
func startFamilies(t *testing.T, ns *nstest.NS, ext iface.External, v4, v6 bool) *running {
	t.Helper()
	return startConfig(t, ns, ext, &lease.Config{EnableIPv4: v4, EnableIPv6: v6, BackendType: Type, Backend: json.RawMessage(`{"Type":"vxlan"}`)})
}

// vx6 is the expected entries of a vxlan-mode peer on flannel-v6.1.
func vx6(sub, pub, mac string) entries { return vxOn("flannel-v6.1", sub, pub, mac) }

// waitEntriesV6 waits for the IPv6 entries of flannel-v6.1 in ns to be want.
func waitEntriesV6(t *testing.T, ns *nstest.NS, want entries, timeout time.Duration) {
	t.Helper()
	waitFamily(t, ns, "flannel-v6.1", netlink.FAMILY_V6, want, timeout)
}

func TestDualStackDevicesAndPeers(t *testing.T) {
	e := newEnvFamilies(t, true, true)
	r := startFamilies(t, e.a, e.ext, true, true)
	if r.MTU() != 1430 {
		t.Errorf("MTU() = %d, want 1430 (the IPv6 device's, which fits both overlays)", r.MTU())
	}
	data, _ := r.BackendV6Data()
	var d struct {
		VNI     int
		VtepMAC string
	}
	if err := json.Unmarshal(data, &d); err != nil || d.VNI != 1 || d.VtepMAC != r.VtepMACV6().String() {
		t.Errorf("BackendV6Data = %s (%v), want VNI 1 and VtepMAC %s", data, err, r.VtepMACV6())
	}
	if r.VtepMACV6().String() == r.VtepMAC().String() {
		t.Errorf("both devices have MAC %s", r.VtepMAC())
	}

	own := dualLease(ownSubnet.String(), hostA.String(), "", ownSubnetV6.String(), hostAV6.String(), "")
	peerB := dualLease("10.5.2.0/24", "192.168.77.2", macB, "fc00:0:0:2::/64", "fd77::2", macC)
	peerC := dualLease("", "", "", "fc00:0:0:3::/64", "fd77::3", macD) // IPv6 only
	r.updates <- backend.Update{Own: &own, Batch: snapshot(own, peerB, peerC)}
	waitEntries(t, e.a, "flannel.1", vx("10.5.2.0/24", "192.168.77.2", macB), settle)
	waitEntriesV6(t, e.a, merge(vx6("fc00:0:0:2::/64", "fd77::2", macC), vx6("fc00:0:0:3::/64", "fd77::3", macD)), settle)

	link := e.a.Link(t, "flannel-v6.1")
	v, ok := link.(*netlink.Vxlan)
	if !ok || v.MTU != 1430 || v.SrcAddr.String() != "fd77::1" || v.HardwareAddr.String() != r.VtepMACV6().String() || v.Learning {
		t.Errorf("flannel-v6.1 = %+v, want vxlan mtu 1430 local fd77::1 address %s nolearning", link.Attrs(), r.VtepMACV6())
	}
	if l4, err := e.a.Handle.LinkByName("flannel.1"); err != nil || l4.Attrs().MTU != 1450 {
		t.Errorf("flannel.1: %v, MTU want 1450", err)
	}
	if out := e.a.IP(t, "-6", "addr", "show", "dev", "flannel-v6.1", "scope", "global"); !strings.Contains(out, "fc00:0:0:1::/128") {
		t.Errorf("flannel-v6.1 addresses:\n%s\nwant fc00:0:0:1::/128", out)
	}
	await.Eventually(t, settle, "status with both devices and 3 peers", func() error {
		if st := r.Status(); st.Device != "flannel.1" || st.DeviceV6 != "flannel-v6.1" || len(st.Peers) != 3 || st.LastPass.IsZero() {
			return fmt.Errorf("Status = %+v, want both devices and 3 peers", st)
		}
		return nil
	})

	// Repairs come from notifications: a deleted IPv6 route and a stray
	// IPv6 route of ours.
	e.a.IP(t, "-6", "route", "del", "fc00:0:0:2::/64")
	e.a.IP(t, "-6", "route", "add", "fc00:0:0:9::/64", "via", "fd77::2", "dev", "eth0", "proto", "78")
	waitEntriesV6(t, e.a, merge(vx6("fc00:0:0:2::/64", "fd77::2", macC), vx6("fc00:0:0:3::/64", "fd77::3", macD)), settle)

	// A changed IPv6 VTEP MAC replaces neighbour and fdb entry.
	peerC2 := dualLease("", "", "", "fc00:0:0:3::/64", "fd77::3", macB)
	r.updates <- backend.Update{Batch: event(lease.EventAdded, peerC2)}
	waitEntriesV6(t, e.a, merge(vx6("fc00:0:0:2::/64", "fd77::2", macC), vx6("fc00:0:0:3::/64", "fd77::3", macB)), settle)

	// Removing a dual-stack lease removes both families' entries.
	r.updates <- backend.Update{Batch: event(lease.EventRemoved, peerB)}
	waitEntries(t, e.a, "flannel.1", entries{}, settle)
	waitEntriesV6(t, e.a, vx6("fc00:0:0:3::/64", "fd77::3", macB), settle)
}

func TestIPv6OnlyPing(t *testing.T) {
	e := newEnvFamilies(t, false, true)
	ra := startFamilies(t, e.a, e.ext, false, true)
	rb := startFamilies(t, e.b, backendtest.Ext(t, e.b, "eth0", hostBV6), false, true)
	if ra.VtepMAC() != nil {
		t.Errorf("IPv6-only backend has an IPv4 VTEP MAC %s", ra.VtepMAC())
	}
	if data, err := ra.BackendData(); data != nil || err != nil {
		t.Errorf("IPv6-only BackendData = %s, %v; want none", data, err)
	}
	la := dualLease("", "", "", "fc00:0:0:1::/64", "fd77::1", ra.VtepMACV6().String())
	lb := dualLease("", "", "", "fc00:0:0:2::/64", "fd77::2", rb.VtepMACV6().String())
	ra.updates <- backend.Update{Own: &la, Batch: snapshot(la, lb)}
	rb.updates <- backend.Update{Own: &lb, Batch: snapshot(la, lb)}
	waitEntriesV6(t, e.a, vx6("fc00:0:0:2::/64", "fd77::2", rb.VtepMACV6().String()), settle)
	waitEntriesV6(t, e.b, vx6("fc00:0:0:1::/64", "fd77::1", ra.VtepMACV6().String()), settle)
	if _, err := e.a.Handle.LinkByName("flannel.1"); err == nil {
		t.Error("IPv6-only backend made flannel.1")
	}
	// From A's overlay address to B's, bounded: 3 packets, an answer to
	// any of them within 30 s (a loaded machine is slow, not lossy). The
	// device MTU is 1430: 1430-48 bytes of payload fit unfragmented.
	e.a.Exec(t, "ping", "-6", "-c", "3", "-W", "30", "-M", "do", "-s", "1382", "-I", "fc00:0:0:1::", "fc00:0:0:2::")
}

func TestIPv6DirectRoutingSwitch(t *testing.T) {
	e := newEnvFamilies(t, true, true)
	r := startConfig(t, e.a, e.ext, &lease.Config{EnableIPv4: true, EnableIPv6: true, BackendType: Type,
		Backend: json.RawMessage(`{"Type":"vxlan","DirectRouting":true}`)})

	own := dualLease(ownSubnet.String(), hostA.String(), "", ownSubnetV6.String(), hostAV6.String(), "")
	peer := dualLease("10.5.2.0/24", "192.168.77.2", macB, "fc00:0:0:2::/64", "fd77::2", macC)
	r.updates <- backend.Update{Own: &own, Batch: snapshot(own, peer)}
	waitEntriesV6(t, e.a, entries{routes: []string{"fc00:0:0:2::/64 via fd77::2 dev eth0"}}, settle)

	// The peer's IPv6 address leaves the directly connected subnet: the
	// route moves to flannel-v6.1 (the kernel takes that only after the
	// old route is gone).
	e.a.IP(t, "-6", "addr", "del", "fd77::1/64", "dev", "eth0")
	e.a.AddrAdd(t, "eth0", "fd77::1/128")
	e.a.IP(t, "-6", "route", "add", "fd77::/64", "dev", "eth0", "metric", "2000")
	waitEntriesV6(t, e.a, vx6("fc00:0:0:2::/64", "fd77::2", macC), settle)
}

func TestNewFamilies(t *testing.T) {
	v4 := iface.External{Name: "eth0", Index: 2, MTU: 1500,
		Addr: netip.MustParseAddr("192.168.77.1"), PublicIP: netip.MustParseAddr("192.168.77.1")}
	dual := v4
	dual.AddrV6, dual.PublicIPv6 = hostAV6, hostAV6
	v6 := dual
	v6.Addr, v6.PublicIP = netip.Addr{}, netip.Addr{}
	tests := []struct {
		name     string
		ext      iface.External
		v4, v6   bool
		settings string
		mtu      int
		err      string
	}{
		{"IPv4 only", v4, true, false, `{}`, 1450, ""},
		{"dual stack", dual, true, true, `{}`, 1430, ""},
		{"IPv6 only", v6, false, true, `{}`, 1430, ""},
		{"IPv6 without an IPv6 address", v4, true, true, `{}`, 0, "EnableIPv6 is set but external interface eth0 has no IPv6 address"},
		{"dual stack without an IPv4 address", v6, true, true, `{}`, 0, "no IPv4 address"},
		{"backend MTU below IPv6's minimum", dual, true, true, `{"MTU":1349}`, 0, "below IPv6's minimum 1280"},
		{"backend MTU at IPv6's minimum", dual, true, true, `{"MTU":1350}`, 1280, ""},
		{"IPv6 device name too long", dual, true, true, `{"VNI":12345}`, 0, `"flannel-v6.12345" is longer than 15 bytes`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, err := New(backend.Options{Handle: &netlink.Handle{}, Ext: tt.ext, Config: &lease.Config{
				EnableIPv4: tt.v4, EnableIPv6: tt.v6, BackendType: Type, Backend: json.RawMessage(tt.settings)}})
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("New: %v, want an error containing %q", err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if b.MTU() != tt.mtu {
				t.Errorf("MTU() = %d, want %d", b.MTU(), tt.mtu)
			}
			d4, _ := b.BackendData()
			d6, _ := b.BackendV6Data()
			if (d4 != nil) != tt.v4 || (d6 != nil) != tt.v6 {
				t.Errorf("BackendData %s, BackendV6Data %s: want one per enabled family", d4, d6)
			}
		})
	}
}
