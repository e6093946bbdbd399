package probe

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"syscall"

	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/netagent/netagent/internal/netnsexec"
)

// inNetns runs fn on a thread switched into ns (see netnsexec.Do).
func inNetns(ns netns.NsHandle, fn func() error) error { return netnsexec.Do(ns, fn) }

// listenUDP opens a UDP socket of addr's family (IPv6 when addr is
// invalid and v6 is set) bound to addr:port, or to the wildcard address
// when addr is invalid. It sets path MTU discovery to "do", so every
// datagram leaves with DF set (IPv4) or unfragmented (IPv6: also
// IPV6_DONTFRAG) and one larger than the route's MTU fails with EMSGSIZE
// instead of being fragmented, and free binding, so the address need not
// be configured yet (the backend adds the overlay address
// asynchronously).
//
// Equivalent to: `socket(AF_INET, SOCK_DGRAM)`, setsockopt
// IP_MTU_DISCOVER=IP_PMTUDISC_DO and IP_FREEBIND, `bind(addr:port)`; for
// IPv6 `socket(AF_INET6, SOCK_DGRAM)`, setsockopt
// IPV6_MTU_DISCOVER=IPV6_PMTUDISC_DO, IPV6_DONTFRAG and IPV6_FREEBIND.
func listenUDP(addr netip.Addr, v6 bool, port int) (*net.UDPConn, error) {
	if addr.IsValid() {
		addr = addr.Unmap()
		v6 = addr.Is6()
	}
	opts := [][3]int{
		{unix.IPPROTO_IP, unix.IP_MTU_DISCOVER, unix.IP_PMTUDISC_DO},
		{unix.IPPROTO_IP, unix.IP_FREEBIND, 1},
	}
	network, bind := "udp4", "0.0.0.0"
	if v6 {
		opts = [][3]int{
			{unix.IPPROTO_IPV6, unix.IPV6_MTU_DISCOVER, unix.IPV6_PMTUDISC_DO},
			{unix.IPPROTO_IPV6, unix.IPV6_DONTFRAG, 1},
			{unix.IPPROTO_IPV6, unix.IPV6_FREEBIND, 1},
		}
		network, bind = "udp6", "::"
	}
	lc := net.ListenConfig{Control: func(_, _ string, c syscall.RawConn) error {
		var serr error
		err := c.Control(func(fd uintptr) {
			for _, o := range opts {
				if serr = unix.SetsockoptInt(int(fd), o[0], o[1], o[2]); serr != nil {
					serr = fmt.Errorf("setsockopt %d/%d: %w", o[0], o[1], serr)
					return
				}
			}
		})
		if err != nil {
			return err
		}
		return serr
	}}
	if addr.IsValid() {
		bind = addr.String()
	}
	hp := net.JoinHostPort(bind, fmt.Sprint(port))
	c, err := lc.ListenPacket(context.Background(), network, hp)
	if err != nil {
		return nil, fmt.Errorf("probe: listen %s %s: %w", network, hp, err)
	}
	return c.(*net.UDPConn), nil
}

// listenUDPIn is listenUDP in namespace ns (see inNetns).
func listenUDPIn(ns netns.NsHandle, addr netip.Addr, v6 bool, port int) (*net.UDPConn, error) {
	var c *net.UDPConn
	err := inNetns(ns, func() error {
		var err error
		c, err = listenUDP(addr, v6, port)
		return err
	})
	return c, err
}
