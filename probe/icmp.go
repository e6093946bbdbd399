package probe

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"syscall"

	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// ICMP destination unreachable, port unreachable: the answer of a host
// that is up but has no socket on the probe port.
const (
	icmpDestUnreach   = 3
	icmpPortUnreach   = 3
	icmp6DestUnreach  = 1
	icmp6PortUnreach  = 4
	icmpHeaderLen     = 8
	ipv6HeaderLen     = 40
	udpHeaderLen      = 8
	protoUDP          = 17
	icmpFilterAllowed = 1 << icmpDestUnreach
)

// listenICMP opens a raw ICMP socket (ICMPv6 with v6) in ns that receives
// only destination-unreachable messages, so that the prober learns which
// of its probes a peer's kernel refused for want of a responder. The
// prober's own sockets are not connected and do not set IP_RECVERR: an
// ICMP error for one peer never surfaces as a send or receive error on a
// probe to another.
//
// Equivalent to: `socket(AF_INET, SOCK_RAW, IPPROTO_ICMP)` with
// ICMP_FILTER letting only type 3 through; for IPv6
// `socket(AF_INET6, SOCK_RAW, IPPROTO_ICMPV6)` with ICMP6_FILTER letting
// only type 1 through.
func listenICMP(ns netns.NsHandle, v6 bool) (*net.IPConn, error) {
	network, bind := "ip4:icmp", "0.0.0.0"
	if v6 {
		network, bind = "ip6:ipv6-icmp", "::"
	}
	lc := net.ListenConfig{Control: func(_, _ string, c syscall.RawConn) error {
		var serr error
		err := c.Control(func(fd uintptr) {
			if v6 {
				var f unix.ICMPv6Filter
				for i := range f.Data {
					f.Data[i] = ^uint32(0)
				}
				f.Data[icmp6DestUnreach>>5] &^= 1 << (icmp6DestUnreach & 31)
				serr = unix.SetsockoptICMPv6Filter(int(fd), unix.SOL_ICMPV6, unix.ICMPV6_FILTER, &f)
				return
			}
			// A set bit filters its type out.
			serr = unix.SetsockoptInt(int(fd), unix.SOL_RAW, unix.ICMP_FILTER, ^icmpFilterAllowed)
		})
		if err != nil {
			return err
		}
		if serr != nil {
			return fmt.Errorf("setsockopt ICMP filter: %w", serr)
		}
		return nil
	}}
	var c *net.IPConn
	err := inNetns(ns, func() error {
		pc, err := lc.ListenPacket(context.Background(), network, bind)
		if err != nil {
			return fmt.Errorf("probe: listen %s: %w", network, err)
		}
		c = pc.(*net.IPConn)
		return nil
	})
	return c, err
}

// refusal is a probe refused by a peer's kernel: the destination of the
// quoted datagram, its ports and the probe's sequence number.
type refusal struct {
	dst              netip.Addr
	srcPort, dstPort uint16
	seq              uint64
}

// parseRefusal reads an ICMP (ICMPv6 with v6) message as the raw socket
// gives it (IPv4: without the outer IP header) and returns the probe it
// refuses: a port unreachable quoting a UDP probe request.
func parseRefusal(b []byte, v6 bool) (refusal, bool) {
	if len(b) < icmpHeaderLen {
		return refusal{}, false
	}
	var (
		inner []byte
		dst   netip.Addr
	)
	if v6 {
		if b[0] != icmp6DestUnreach || b[1] != icmp6PortUnreach {
			return refusal{}, false
		}
		ip := b[icmpHeaderLen:]
		if len(ip) < ipv6HeaderLen || ip[0]>>4 != 6 || ip[6] != protoUDP {
			return refusal{}, false
		}
		dst = netip.AddrFrom16([16]byte(ip[24:40]))
		inner = ip[ipv6HeaderLen:]
	} else {
		if b[0] != icmpDestUnreach || b[1] != icmpPortUnreach {
			return refusal{}, false
		}
		ip := b[icmpHeaderLen:]
		if len(ip) < 20 || ip[0]>>4 != 4 {
			return refusal{}, false
		}
		ihl := int(ip[0]&0x0f) * 4
		if ihl < 20 || len(ip) < ihl || ip[9] != protoUDP {
			return refusal{}, false
		}
		dst = netip.AddrFrom4([4]byte(ip[16:20]))
		inner = ip[ihl:]
	}
	if len(inner) < udpHeaderLen+headerLen {
		return refusal{}, false
	}
	r := refusal{dst: dst, srcPort: binary.BigEndian.Uint16(inner[0:]), dstPort: binary.BigEndian.Uint16(inner[2:])}
	pb := inner[udpHeaderLen:]
	// The quote may be cut short: only the fixed header is checked.
	if [4]byte(pb[:4]) != magic || pb[4] != wireVersion || pb[5] != kindRequest {
		return refusal{}, false
	}
	r.seq = binary.BigEndian.Uint64(pb[8:])
	return r, true
}

// readRefusals delivers the port-unreachable messages arriving on c to
// the pending probes they refuse, until c is closed.
func (p *Prober) readRefusals(c *net.IPConn) error {
	v6 := p.cfg.LocalOverlay.Is6()
	buf := make([]byte, 2048)
	for {
		n, _, err := c.ReadFrom(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return nil
			}
			return fmt.Errorf("probe: read ICMP: %w", err)
		}
		r, ok := parseRefusal(buf[:n], v6)
		if !ok || r.dstPort != uint16(p.cfg.Port) || !p.ownPort(r.srcPort) {
			continue
		}
		p.pendMu.Lock()
		pp := p.pending[r.seq]
		p.pendMu.Unlock()
		if pp == nil || pp.dst != r.dst.Unmap() {
			continue
		}
		select {
		case pp.reply <- answer{refused: true}:
			p.refused.Add(1)
		default:
		}
	}
}

// ownPort reports whether port is the local port of one of the prober's
// sockets.
func (p *Prober) ownPort(port uint16) bool {
	for _, c := range []*net.UDPConn{p.overlay, p.underlay} {
		if a, ok := c.LocalAddr().(*net.UDPAddr); ok && a.Port == int(port) {
			return true
		}
	}
	return false
}
