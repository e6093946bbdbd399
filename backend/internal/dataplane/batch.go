package dataplane

import (
	"encoding/binary"
	"fmt"
	"net"
	"syscall"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/netagent/netagent/backend"
)

// batchSize is the number of requests written to the kernel in one
// sendmsg before their acknowledgements are read.
const batchSize = 256

// batcher writes many rtnetlink requests per system call on its own socket
// and matches the acknowledgements by sequence number: what `ip -batch`
// does one request at a time.
type batcher struct {
	s   *nl.NetlinkSocket
	seq uint32
}

func newBatcher(ns netns.NsHandle) (*batcher, error) {
	if ns == 0 {
		ns = netns.None()
	}
	s, err := nl.GetNetlinkSocketAt(ns, netns.None(), unix.NETLINK_ROUTE)
	if err != nil {
		return nil, err
	}
	return &batcher{s: s}, nil
}

func (bt *batcher) close() { bt.s.Close() }

// run executes ops, storing each op's error in errs (same indexes).
func (bt *batcher) run(ops []op, errs []error) {
	for start := 0; start < len(ops); start += batchSize {
		end := min(start+batchSize, len(ops))
		bt.chunk(ops[start:end], errs[start:end])
	}
}

func (bt *batcher) chunk(ops []op, errs []error) {
	base := bt.seq + 1
	var buf []byte
	for i := range ops {
		req := serialize(&ops[i])
		req.Seq = base + uint32(i)
		buf = append(buf, req.Serialize()...)
	}
	bt.seq += uint32(len(ops))
	pending := len(ops)
	seen := make([]bool, len(ops))
	if err := unix.Sendto(bt.s.GetFd(), buf, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		for i := range ops {
			errs[i] = fmt.Errorf("%s: send: %w", &ops[i], err)
		}
		return
	}
	for pending > 0 {
		msgs, _, err := bt.s.Receive()
		if err != nil {
			for i := range ops {
				if !seen[i] {
					errs[i] = fmt.Errorf("%s: receive: %w", &ops[i], err)
				}
			}
			return
		}
		for _, m := range msgs {
			if m.Header.Type != unix.NLMSG_ERROR || len(m.Data) < 4 {
				continue
			}
			i := int(m.Header.Seq - base)
			if i < 0 || i >= len(ops) || seen[i] {
				continue
			}
			seen[i] = true
			pending--
			code := int32(binary.NativeEndian.Uint32(m.Data[:4]))
			if code == 0 {
				continue
			}
			errno := syscall.Errno(-code)
			if ops[i].del && backend.IsNotFound(errno) {
				continue
			}
			errs[i] = fmt.Errorf("%s: %w", &ops[i], errno)
		}
	}
}

// serialize builds the request for an op, as netlink's RouteReplace,
// RouteDel, NeighSet and NeighDel would, for either address family.
func serialize(o *op) *nl.NetlinkRequest {
	if o.route != nil {
		r := o.route
		typ, flags := unix.RTM_NEWROUTE, unix.NLM_F_CREATE|unix.NLM_F_REPLACE|unix.NLM_F_ACK
		if o.del {
			typ, flags = unix.RTM_DELROUTE, unix.NLM_F_ACK
		}
		req := nl.NewNetlinkRequest(typ, flags)
		msg := nl.NewRtMsg()
		msg.Family = unix.AF_INET
		if r.Dst.IP.To4() == nil {
			msg.Family = unix.AF_INET6
		}
		msg.Table = unix.RT_TABLE_MAIN
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
		return req
	}
	n := o.neigh
	typ, flags := unix.RTM_NEWNEIGH, unix.NLM_F_CREATE|unix.NLM_F_REPLACE|unix.NLM_F_ACK
	if o.del {
		typ, flags = unix.RTM_DELNEIGH, unix.NLM_F_ACK
	}
	req := nl.NewNetlinkRequest(typ, flags)
	req.AddData(&netlink.Ndmsg{
		Family: uint8(n.Family),
		Index:  uint32(n.LinkIndex),
		State:  uint16(n.State),
		Type:   uint8(n.Type),
		Flags:  uint8(n.Flags),
	})
	req.AddData(nl.NewRtAttr(netlink.NDA_DST, ip4(n.IP)))
	if n.HardwareAddr != nil {
		req.AddData(nl.NewRtAttr(netlink.NDA_LLADDR, []byte(n.HardwareAddr)))
	}
	return req
}

func ip4(ip net.IP) []byte {
	if v4 := ip.To4(); v4 != nil {
		return v4
	}
	return ip
}
