package dataplane

import (
	"encoding/binary"
	"fmt"
	"net"
	"syscall"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/netagent/netagent/backend"
)

// batchSize is the number of requests written to the kernel in one
// sendmsg.
const batchSize = 256

// batchRecvBuf is the size of a batcher's receive buffer: one datagram,
// an acknowledgement or an error, which NETLINK_CAP_ACK keeps short.
const batchRecvBuf = 16 << 10

// batchReplyTimeout bounds the wait for the replies of one sendmsg. The
// kernel queues them before sendmsg returns, so it only matters if that
// ever stops being so.
const batchReplyTimeout = 10 * time.Second

// batcher writes many rtnetlink requests per system call on its own socket,
// what `ip -batch` does one request at a time. Only the last request of a
// sendmsg asks for an acknowledgement: the kernel handles the requests of
// one sendmsg in order before the call returns and reports the error of
// any request that fails, acknowledged or not, so the replies up to that
// last acknowledgement tell the outcome of every request. The socket sets
// NETLINK_CAP_ACK, so that an error does not echo the request back; the
// request and receive buffers are reused from one sendmsg to the next.
type batcher struct {
	s    *nl.NetlinkSocket
	seq  uint32
	req  []byte
	rbuf []byte
}

func newBatcher(ns netns.NsHandle) (*batcher, error) {
	if ns == 0 {
		ns = netns.None()
	}
	s, err := nl.GetNetlinkSocketAt(ns, netns.None(), unix.NETLINK_ROUTE)
	if err != nil {
		return nil, err
	}
	// Best effort: without it (before Linux 4.3) errors are only longer.
	_ = unix.SetsockoptInt(s.GetFd(), unix.SOL_NETLINK, unix.NETLINK_CAP_ACK, 1)
	return &batcher{s: s, rbuf: make([]byte, batchRecvBuf)}, nil
}

func (bt *batcher) close() { bt.s.Close() }

// run executes the ops of ops whose indexes are in idx, storing each op's
// error in errs at the op's index. before, if not nil, is called with the
// indexes of each sendmsg before it is sent; after, if not nil, with the
// number of idx done after each.
func (bt *batcher) run(ops []op, idx []int, errs []error, before func(chunk []int), after func(done int)) {
	for start := 0; start < len(idx); start += batchSize {
		end := min(start+batchSize, len(idx))
		if before != nil {
			before(idx[start:end])
		}
		bt.chunk(ops, idx[start:end], errs)
		if after != nil {
			after(end)
		}
	}
}

// chunk sends the ops of idx in one sendmsg and reads the replies.
func (bt *batcher) chunk(ops []op, idx []int, errs []error) {
	base := bt.seq + 1
	last := base + uint32(len(idx)) - 1
	bt.seq = last
	bt.req = bt.req[:0]
	for j, i := range idx {
		bt.req = appendRequest(bt.req, &ops[i], base+uint32(j), j == len(idx)-1)
	}
	fail := func(what string, err error) {
		for _, i := range idx {
			if errs[i] == nil {
				errs[i] = fmt.Errorf("%s: %s: %w", &ops[i], what, err)
			}
		}
	}
	fd := bt.s.GetFd()
	if err := unix.Sendto(fd, bt.req, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		fail("send", err)
		return
	}
	for {
		n, _, err := unix.Recvfrom(fd, bt.rbuf, unix.MSG_DONTWAIT)
		if err == unix.EAGAIN || err == unix.EINTR {
			if err = waitReadable(fd, batchReplyTimeout); err == nil {
				continue
			}
		}
		if err != nil {
			// Replies may have been lost (ENOBUFS): the outcome of
			// the requests not reported failed is unknown.
			fail("receive", err)
			return
		}
		if bt.replies(bt.rbuf[:n], ops, idx, errs, base, last) {
			return
		}
	}
}

// replies records the errors of one datagram of replies, and reports
// whether it held the acknowledgement of the chunk's last request.
func (bt *batcher) replies(b []byte, ops []op, idx []int, errs []error, base, last uint32) (done bool) {
	for len(b) >= unix.NLMSG_HDRLEN {
		l := int(binary.NativeEndian.Uint32(b[0:4]))
		if l < unix.NLMSG_HDRLEN || l > len(b) {
			return done
		}
		typ := binary.NativeEndian.Uint16(b[4:6])
		seq := binary.NativeEndian.Uint32(b[8:12])
		if typ == unix.NLMSG_ERROR && l >= unix.NLMSG_HDRLEN+4 && seq-base <= last-base {
			i := idx[seq-base]
			if code := int32(binary.NativeEndian.Uint32(b[unix.NLMSG_HDRLEN:])); code != 0 {
				errno := syscall.Errno(-code)
				if !ops[i].del || !backend.IsNotFound(errno) {
					errs[i] = fmt.Errorf("%s: %w", &ops[i], errno)
				}
			}
			done = done || seq == last
		}
		b = b[min(nlmAlign(l), len(b)):]
	}
	return done
}

// waitReadable waits until fd has something to read, or timeout.
func waitReadable(fd int, timeout time.Duration) error {
	fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
	for {
		n, err := unix.Poll(fds, int(timeout.Milliseconds()))
		switch {
		case err == unix.EINTR:
			continue
		case err != nil:
			return err
		case n == 0:
			return fmt.Errorf("no reply within %s", timeout)
		}
		return nil
	}
}

// appendRequest appends the netlink request for an op to b, as netlink's
// RouteReplace, RouteDel, NeighSet and NeighDel would build it, for either
// address family; with ack, the request asks for an acknowledgement.
func appendRequest(b []byte, o *op, seq uint32, ack bool) []byte {
	flags := uint16(unix.NLM_F_REQUEST)
	if ack {
		flags |= unix.NLM_F_ACK
	}
	if !o.del {
		flags |= unix.NLM_F_CREATE | unix.NLM_F_REPLACE
	}
	start := len(b)
	if o.route != nil {
		r := o.route
		typ := uint16(unix.RTM_NEWROUTE)
		if o.del {
			typ = unix.RTM_DELROUTE
		}
		b = appendHeader(b, typ, flags, seq)
		family := uint8(unix.AF_INET)
		if r.Dst.IP.To4() == nil {
			family = unix.AF_INET6
		}
		ones, _ := r.Dst.Mask.Size()
		scope, rtFlags := uint8(unix.RT_SCOPE_UNIVERSE), uint32(r.Flags)
		if o.del {
			scope, rtFlags = unix.RT_SCOPE_NOWHERE, 0
		}
		// struct rtmsg: family, dst_len, src_len, tos, table,
		// protocol, scope, type, flags.
		b = append(b, family, uint8(ones), 0, 0, unix.RT_TABLE_MAIN, uint8(r.Protocol), scope, unix.RTN_UNICAST)
		b = binary.NativeEndian.AppendUint32(b, rtFlags)
		b = appendAttr(b, unix.RTA_DST, ip4(r.Dst.IP))
		if !o.del {
			b = appendAttr(b, unix.RTA_GATEWAY, ip4(r.Gw))
			b = binary.NativeEndian.AppendUint16(b, unix.SizeofRtAttr+4)
			b = binary.NativeEndian.AppendUint16(b, unix.RTA_OIF)
			b = binary.NativeEndian.AppendUint32(b, uint32(r.LinkIndex))
		}
	} else {
		n := o.neigh
		typ := uint16(unix.RTM_NEWNEIGH)
		if o.del {
			typ = unix.RTM_DELNEIGH
		}
		b = appendHeader(b, typ, flags, seq)
		// struct ndmsg: family, pad1, pad2, ifindex, state, flags, type.
		b = append(b, uint8(n.Family), 0, 0, 0)
		b = binary.NativeEndian.AppendUint32(b, uint32(n.LinkIndex))
		b = binary.NativeEndian.AppendUint16(b, uint16(n.State))
		b = append(b, uint8(n.Flags), uint8(n.Type))
		b = appendAttr(b, netlink.NDA_DST, ip4(n.IP))
		if n.HardwareAddr != nil {
			b = appendAttr(b, netlink.NDA_LLADDR, n.HardwareAddr)
		}
	}
	binary.NativeEndian.PutUint32(b[start:], uint32(len(b)-start))
	return b
}

// appendHeader appends a struct nlmsghdr whose length is filled in later.
func appendHeader(b []byte, typ, flags uint16, seq uint32) []byte {
	b = binary.NativeEndian.AppendUint32(b, 0)
	b = binary.NativeEndian.AppendUint16(b, typ)
	b = binary.NativeEndian.AppendUint16(b, flags)
	b = binary.NativeEndian.AppendUint32(b, seq)
	return binary.NativeEndian.AppendUint32(b, 0)
}

// appendAttr appends a struct rtattr and its data, padded to 4 bytes.
func appendAttr(b []byte, typ uint16, data []byte) []byte {
	b = binary.NativeEndian.AppendUint16(b, uint16(unix.SizeofRtAttr+len(data)))
	b = binary.NativeEndian.AppendUint16(b, typ)
	b = append(b, data...)
	return append(b, make([]byte, (4-len(data)%4)%4)...)
}

func nlmAlign(l int) int { return (l + unix.NLMSG_ALIGNTO - 1) &^ (unix.NLMSG_ALIGNTO - 1) }

func ip4(ip net.IP) []byte {
	if v4 := ip.To4(); v4 != nil {
		return v4
	}
	return ip
}
