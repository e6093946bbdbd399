package wireguard

import (
	"errors"
	"fmt"

	"github.com/vishvananda/netlink"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// Implementations, as --wireguard-impl names them.
const (
	ImplAuto      = "auto"
	ImplKernel    = "kernel"
	ImplUserspace = "userspace"
)

// impl is one implementation of a WireGuard device: the kernel's (a link
// of type wireguard, configured over generic netlink) or wireguard-go's in
// this process over a TUN device. The reconcile logic (tunnel) is the same
// for both.
type impl interface {
	// kind is ImplKernel or ImplUserspace.
	kind() string
	// ensure creates the device, or adopts the one there (a userspace
	// device re-attaches to the persistent TUN of a previous run), and
	// reports whether it had to make it.
	ensure(h *netlink.Handle) (link netlink.Link, created bool, err error)
	// configure applies cfg in one call.
	configure(cfg wgtypes.Config) error
	// device reads the device's configuration and peers.
	device() (*wgtypes.Device, error)
	// close releases what the process holds; the device, its address,
	// its route and (in kernel mode) its peers stay.
	close() error
}

// choice is the implementation chosen and why.
type choice struct {
	impl, reason string
}

// choose picks the implementation: flag is --wireguard-impl, existing the
// type of the link already named like the device ("" for none: "tuntap" for a
// userspace device a previous run left, "wireguard" for a kernel one), and
// tryKernel creates a kernel device and reports whether that worked. It
// calls tryKernel only for auto with no device there.
func choose(flag, existing string, tryKernel func() error) (choice, error) {
	switch flag {
	case ImplUserspace:
		return choice{ImplUserspace, "--wireguard-impl=userspace"}, nil
	case ImplKernel:
		return choice{ImplKernel, "--wireguard-impl=kernel"}, nil
	case ImplAuto, "":
	default:
		return choice{}, fmt.Errorf("wireguard: --wireguard-impl %q is not one of auto, kernel, userspace", flag)
	}
	switch existing {
	case "wireguard":
		return choice{ImplKernel, "auto: the kernel's WireGuard device is already there"}, nil
	case "tuntap":
		return choice{ImplUserspace, "auto: re-attaching to the userspace device (TUN) of a previous run"}, nil
	}
	if err := tryKernel(); err != nil {
		return choice{ImplUserspace, fmt.Sprintf("auto: the kernel cannot create a wireguard link (%v)", err)}, nil
	}
	return choice{ImplKernel, "auto: the kernel has WireGuard"}, nil
}

// linkType is the type of the link named name, "" when there is none.
func linkType(h *netlink.Handle, name string) (string, error) {
	l, err := h.LinkByName(name)
	var nf netlink.LinkNotFoundError
	if errors.As(err, &nf) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("look up %s: %w", name, err)
	}
	return l.Type(), nil
}
