package dataplane

import (
	"bytes"
	"errors"
	"net/netip"
	"syscall"
	"testing"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"

	"github.com/netagent/netagent/backend"
	"github.com/netagent/netagent/iface"
	"github.com/netagent/netagent/internal/nstest"
)

// libRequest builds the request for o with the netlink library's own
// message types, as its RouteReplace, RouteDel, NeighSet and NeighDel do.
func libRequest(o *op, seq uint32, ack bool) []byte {
	var flags int
	if ack {
		flags = unix.NLM_F_ACK
	}
	if !o.del {
		flags |= unix.NLM_F_CREATE | unix.NLM_F_REPLACE
	}
	var req *nl.NetlinkRequest
	if r := o.route; r != nil {
		typ := unix.RTM_NEWROUTE
		if o.del {
			typ = unix.RTM_DELROUTE
		}
		req = nl.NewNetlinkRequest(typ, flags)
		msg := nl.NewRtMsg()
		msg.Family = unix.AF_INET
		if r.Dst.IP.To4() == nil {
			msg.Family = unix.AF_INET6
		}
		msg.Protocol = uint8(r.Protocol)
		ones, _ := r.Dst.Mask.Size()
		msg.Dst_len = uint8(ones)
		if o.del {
			msg.Scope = unix.RT_SCOPE_NOWHERE
		} else {
			msg.Flags = uint32(r.Flags)
		}
		req.AddData(msg)
		req.AddData(nl.NewRtAttr(unix.RTA_DST, ip4(r.Dst.IP)))
		if !o.del {
			req.AddData(nl.NewRtAttr(unix.RTA_GATEWAY, ip4(r.Gw)))
			req.AddData(nl.NewRtAttr(unix.RTA_OIF, nl.Uint32Attr(uint32(r.LinkIndex))))
		}
	} else {
		n := o.neigh
		typ := unix.RTM_NEWNEIGH
		if o.del {
			typ = unix.RTM_DELNEIGH
		}
		req = nl.NewNetlinkRequest(typ, flags)
		req.AddData(&netlink.Ndmsg{Family: uint8(n.Family), Index: uint32(n.LinkIndex),
			State: uint16(n.State), Type: uint8(n.Type), Flags: uint8(n.Flags)})
		req.AddData(nl.NewRtAttr(netlink.NDA_DST, ip4(n.IP)))
		if n.HardwareAddr != nil {
			req.AddData(nl.NewRtAttr(netlink.NDA_LLADDR, []byte(n.HardwareAddr)))
		}
	}
	req.Seq = seq
	return req.Serialize()
}

func TestAppendRequestMatchesNetlink(t *testing.T) {
	mac := nstest.MustMAC("02:00:00:00:01:02")
	v4 := &Engine{cfg: Config{Family: 4, Ext: extWithIndex(7)}, devIndex: 3}
	v6 := &Engine{cfg: Config{Family: 6, Ext: extWithIndex(7)}, devIndex: 4}
	p4 := &peer{subnet: netip.MustParsePrefix("10.5.17.0/24"), publicIP: netip.MustParseAddr("192.168.77.12"), mac: mac, mode: backend.ModeVXLAN}
	p4d := &peer{subnet: p4.subnet, publicIP: p4.publicIP, mode: backend.ModeDirect}
	p6 := &peer{subnet: netip.MustParsePrefix("fc00:0:0:11::/64"), publicIP: netip.MustParseAddr("fd00::12"), mac: mac, mode: backend.ModeVXLAN}
	tests := []struct {
		name string
		op   op
	}{
		{"v4 route replace onlink", op{kind: kindRoute, route: v4.wantRoute(p4)}},
		{"v4 route replace direct", op{kind: kindRoute, route: v4.wantRoute(p4d)}},
		{"v4 route delete", op{kind: kindRoute, del: true, route: v4.wantRoute(p4)}},
		{"v6 route replace", op{kind: kindRoute, route: v6.wantRoute(p6)}},
		{"v6 route delete", op{kind: kindRoute, del: true, route: v6.wantRoute(p6)}},
		{"v4 neighbour replace", op{kind: kindNeigh, neigh: neighEntry(3, p4.subnet.Addr(), mac)}},
		{"v4 neighbour delete", op{kind: kindNeigh, del: true, neigh: neighEntry(3, p4.subnet.Addr(), nil)}},
		{"v6 neighbour replace", op{kind: kindNeigh, neigh: neighEntry(4, p6.subnet.Addr(), mac)}},
		{"fdb replace", op{kind: kindFDB, neigh: fdbEntry(3, mac, p4.publicIP)}},
		{"fdb v6 delete", op{kind: kindFDB, del: true, neigh: fdbEntry(4, mac, p6.publicIP)}},
	}
	for _, tt := range tests {
		for _, ack := range []bool{false, true} {
			got := appendRequest([]byte("prefix"), &tt.op, 42, ack)
			want := append([]byte("prefix"), libRequest(&tt.op, 42, ack)...)
			if !bytes.Equal(got, want) {
				t.Errorf("%s (ack %t):\n got % x\nwant % x", tt.name, ack, got, want)
			}
		}
	}
}

// TestBatcherErrorsPerRequest runs more than one sendmsg of requests, some
// failing (one of them the acknowledged last one), and checks that each
// error lands on its own op, that deleting what is absent is no error,
// and that the kernel holds what succeeded.
func TestBatcherErrorsPerRequest(t *testing.T) {
	ns := nstest.NewNS(t, "batch")
	ns.IP(t, "link", "add", "flannel.1", "type", "vxlan", "id", "1", "dstport", "8472", "nolearning")
	ns.IP(t, "link", "set", "flannel.1", "up")
	link, err := ns.Handle.LinkByName("flannel.1")
	if err != nil {
		t.Fatal(err)
	}
	e := &Engine{cfg: Config{Family: 4}, devIndex: link.Attrs().Index}
	const n = batchSize + 50
	bad := map[int]bool{7: true, batchSize - 1: true, n - 1: true}
	ops := make([]op, n)
	idx := make([]int, n)
	for i := range ops {
		idx[i] = i
		p := &peer{subnet: netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 1 + byte(i/256), byte(i), 0}), 24), mode: backend.ModeVXLAN}
		ops[i] = op{kind: kindRoute, route: e.wantRoute(p), peer: p.subnet}
		switch {
		case bad[i]:
			ops[i].route.LinkIndex = 9999
		case i%10 == 5:
			// Never installed: deleting it is not an error.
			ops[i].del = true
		}
	}
	bt, err := newBatcher(ns.Netns)
	if err != nil {
		t.Fatal(err)
	}
	defer bt.close()
	errs := make([]error, n)
	bt.run(ops, idx, errs, nil, nil)
	for i, err := range errs {
		if bad[i] != (err != nil) {
			t.Errorf("op %d (%s): error %v, want one: %t", i, &ops[i], err, bad[i])
		}
		if bad[i] && !errors.Is(err, syscall.ENODEV) {
			t.Errorf("op %d: error %v, want ENODEV", i, err)
		}
	}
	routes, err := ns.Handle.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Protocol: backend.RouteProtocol}, netlink.RT_FILTER_PROTOCOL)
	if err != nil {
		t.Fatal(err)
	}
	want := 0
	for i := range ops {
		if !bad[i] && !ops[i].del {
			want++
		}
	}
	if len(routes) != want {
		t.Errorf("kernel holds %d routes, want %d", len(routes), want)
	}
}

func extWithIndex(i int) iface.External {
	return iface.External{Name: "eth0", Index: i, Addr: netip.MustParseAddr("192.168.77.1")}
}
