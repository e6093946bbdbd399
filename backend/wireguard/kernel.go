package wireguard

import (
	"fmt"
	"sync"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.zx2c4.com/wireguard/wgctrl"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/netagent/netagent/backend"
	"github.com/netagent/netagent/internal/netnsexec"
)

// kernelImpl is the kernel's WireGuard: a link of type wireguard,
// configured with wgctrl over generic netlink. The device and its peers
// live in the kernel: an agent restart leaves them carrying traffic.
type kernelImpl struct {
	name  string
	mtu   int
	netns netns.NsHandle

	mu     sync.Mutex
	client *wgctrl.Client
}

func (k *kernelImpl) kind() string { return ImplKernel }

// createKernelLink adds the device.
//
// Equivalent to: `ip link add <name> mtu <mtu> type wireguard`.
func createKernelLink(h *netlink.Handle, name string, mtu int) error {
	return h.LinkAdd(&netlink.Wireguard{LinkAttrs: netlink.LinkAttrs{Name: name, MTU: mtu}})
}

func (k *kernelImpl) ensure(h *netlink.Handle) (netlink.Link, bool, error) {
	typ, err := linkType(h, k.name)
	if err != nil {
		return nil, false, err
	}
	created := false
	if typ != "" && typ != "wireguard" {
		// A TUN of an earlier userspace run, or anything else.
		l, err := h.LinkByName(k.name)
		if err == nil {
			if err := h.LinkDel(l); err != nil && !backend.IsNotFound(err) {
				return nil, false, fmt.Errorf("delete %s (type %s): %w", k.name, typ, err)
			}
		}
		typ = ""
	}
	if typ == "" {
		if err := createKernelLink(h, k.name, k.mtu); err != nil {
			return nil, false, fmt.Errorf("create %s: %w", k.name, err)
		}
		created = true
	}
	l, err := h.LinkByName(k.name)
	if err != nil {
		return nil, false, fmt.Errorf("look up %s: %w", k.name, err)
	}
	return l, created, nil
}

// wg returns the generic netlink client, made in the device's namespace.
func (k *kernelImpl) wg() (*wgctrl.Client, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.client != nil {
		return k.client, nil
	}
	err := netnsexec.Do(k.netns, func() error {
		c, err := wgctrl.New()
		k.client = c
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("wireguard: generic netlink client: %w", err)
	}
	return k.client, nil
}

// configure is `wg setconf`-like: one generic netlink request sequence.
func (k *kernelImpl) configure(cfg wgtypes.Config) error {
	c, err := k.wg()
	if err != nil {
		return err
	}
	return c.ConfigureDevice(k.name, cfg)
}

// device is `wg show <name> dump`.
func (k *kernelImpl) device() (*wgtypes.Device, error) {
	c, err := k.wg()
	if err != nil {
		return nil, err
	}
	return c.Device(k.name)
}

func (k *kernelImpl) close() error {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.client == nil {
		return nil
	}
	err := k.client.Close()
	k.client = nil
	return err
}
