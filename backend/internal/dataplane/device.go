package dataplane

import (
	"errors"
	"fmt"
	"net"
	"net/netip"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/netagent/netagent/backend"
)

// defaultVXLANPort is the port the kernel uses when none is given.
const defaultVXLANPort = 8472

// ensureDevice creates the VXLAN device, or adopts a compatible one and
// corrects its MTU, MAC, state and addresses; an incompatible one is
// deleted and re-created. It sets e.devIndex.
//
// Equivalent to: `ip link add flannel.N type vxlan id N local <addr> dev
// <ext> dstport <port> nolearning; ip link set flannel.N address <mac> mtu
// <mtu> up; ip addr replace <own>/32 dev flannel.N` (for IPv6:
// flannel-v6.N, local <IPv6 addr>, `<own>/128 nodad`).
func (e *Engine) ensureDevice() error {
	h := e.cfg.Handle
	spec := e.cfg.Device
	link, err := h.LinkByName(spec.Name)
	var notFound netlink.LinkNotFoundError
	switch {
	case errors.As(err, &notFound):
		link = nil
	case err != nil:
		e.devIndex = 0
		return fmt.Errorf("look up %s: %w", spec.Name, err)
	}
	created := false
	if link != nil {
		if why := e.incompatible(link); why != "" {
			e.log.Warn("replacing incompatible device", "device", spec.Name, "reason", why)
			if err := h.LinkDel(link); err != nil && !backend.IsNotFound(err) {
				e.devIndex = 0
				return fmt.Errorf("delete incompatible %s: %w", spec.Name, err)
			}
			link = nil
		}
	}
	if link == nil {
		if link, err = e.createDevice(); err != nil {
			e.devIndex = 0
			return err
		}
		created = true
	}
	repaired := created && e.firstDone
	attrs := link.Attrs()
	if attrs.MTU != spec.MTU {
		if err := h.LinkSetMTU(link, spec.MTU); err != nil {
			return fmt.Errorf("set MTU of %s: %w", spec.Name, err)
		}
		repaired = repaired || !created
	}
	if !macEqual(attrs.HardwareAddr, spec.MAC) {
		if err := h.LinkSetHardwareAddr(link, spec.MAC); err != nil {
			return fmt.Errorf("set address of %s: %w", spec.Name, err)
		}
		repaired = repaired || !created
	}
	if attrs.Flags&net.FlagUp == 0 {
		if err := h.LinkSetUp(link); err != nil {
			return fmt.Errorf("set %s up: %w", spec.Name, err)
		}
		repaired = repaired || !created
	}
	if e.devIndex != attrs.Index {
		e.log.Info("vxlan device ready", "device", spec.Name, "index", attrs.Index, "created", created, "mac", spec.MAC.String())
	}
	e.devIndex = attrs.Index
	if repaired && e.firstDone {
		e.mu.Lock()
		e.counters.Repairs[kindDevice]++
		e.mu.Unlock()
	}
	return e.ensureAddress(link)
}

func (e *Engine) createDevice() (netlink.Link, error) {
	spec := e.cfg.Device
	v := &netlink.Vxlan{
		LinkAttrs: netlink.LinkAttrs{
			Name:         spec.Name,
			MTU:          spec.MTU,
			HardwareAddr: spec.MAC,
		},
		VxlanId:      spec.VNI,
		VtepDevIndex: e.cfg.Ext.Index,
		SrcAddr:      net.IP(e.localAddr().AsSlice()),
		Port:         spec.Port,
		Learning:     spec.Learning,
		GBP:          spec.GBP,
	}
	if err := e.cfg.Handle.LinkAdd(v); err != nil {
		return nil, fmt.Errorf("create %s: %w", spec.Name, err)
	}
	link, err := e.cfg.Handle.LinkByName(spec.Name)
	if err != nil {
		return nil, fmt.Errorf("look up created %s: %w", spec.Name, err)
	}
	return link, nil
}

// incompatible says why an existing link cannot serve as the device, or ""
// when it can.
func (e *Engine) incompatible(link netlink.Link) string {
	spec := e.cfg.Device
	v, ok := link.(*netlink.Vxlan)
	if !ok {
		return fmt.Sprintf("type %s, want vxlan", link.Type())
	}
	port := spec.Port
	if port == 0 {
		port = defaultVXLANPort
	}
	local, _ := netip.AddrFromSlice(v.SrcAddr)
	switch {
	case v.VxlanId != spec.VNI:
		return fmt.Sprintf("VNI %d, want %d", v.VxlanId, spec.VNI)
	case local.Unmap() != e.localAddr():
		return fmt.Sprintf("local %s, want %s", v.SrcAddr, e.localAddr())
	case v.VtepDevIndex != e.cfg.Ext.Index:
		return fmt.Sprintf("dev index %d, want %d (%s)", v.VtepDevIndex, e.cfg.Ext.Index, e.cfg.Ext.Name)
	case v.Port != port:
		return fmt.Sprintf("dstport %d, want %d", v.Port, port)
	case v.Learning != spec.Learning:
		return fmt.Sprintf("learning %t, want %t", v.Learning, spec.Learning)
	case v.GBP != spec.GBP:
		return fmt.Sprintf("gbp %t, want %t", v.GBP, spec.GBP)
	case v.FlowBased:
		return "external (flow based)"
	case v.Group != nil && !v.Group.IsUnspecified():
		return fmt.Sprintf("group/remote %s, want none", v.Group)
	}
	return ""
}

// ensureAddress leaves exactly the own lease's network address /32 as the
// device's IPv4 address (for IPv6: /128, added without duplicate address
// detection, and the kernel's link-local address left alone).
//
// Equivalent to: `ip addr add <own>/32 dev flannel.N`, `ip addr del ...`.
func (e *Engine) ensureAddress(link netlink.Link) error {
	h := e.cfg.Handle
	want := netip.PrefixFrom(e.own.Addr(), e.hostBits())
	addrs, err := backend.RetryDump(func() ([]netlink.Addr, error) { return h.AddrList(link, e.nlFamily()) })
	if err != nil {
		return fmt.Errorf("list addresses of %s: %w", e.devName(), err)
	}
	have := false
	var errs []error
	for i := range addrs {
		p, ok := ipNetPrefix(addrs[i].IPNet)
		if ok && p == want {
			have = true
			continue
		}
		if ok && p.Addr().IsLinkLocalUnicast() {
			continue
		}
		e.log.Info("removing stray address", "device", e.devName(), "addr", addrs[i].IPNet)
		if err := h.AddrDel(link, &addrs[i]); err != nil && !backend.IsNotFound(err) {
			errs = append(errs, fmt.Errorf("remove %s from %s: %w", addrs[i].IPNet, e.devName(), err))
			continue
		}
		e.countRepair(kindAddress)
	}
	if !have {
		addr := &netlink.Addr{IPNet: prefixNet(want)}
		if e.v6() {
			// The address is the peers' next hop: a tentative one
			// would not answer for a second or two.
			addr.Flags = unix.IFA_F_NODAD
		}
		if err := h.AddrReplace(link, addr); err != nil {
			errs = append(errs, fmt.Errorf("add %s to %s: %w", want, e.devName(), err))
		} else {
			e.countRepair(kindAddress)
		}
	}
	return errors.Join(errs...)
}

func (e *Engine) countRepair(kind string) {
	if !e.firstDone {
		return
	}
	e.mu.Lock()
	e.counters.Repairs[kind]++
	e.mu.Unlock()
}
