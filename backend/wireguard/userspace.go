package wireguard

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
	"golang.zx2c4.com/wireguard/conn"
	"golang.zx2c4.com/wireguard/device"
	"golang.zx2c4.com/wireguard/tun"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/netagent/netagent/internal/memlimit"
	"github.com/netagent/netagent/internal/netnsexec"
)

// DefaultSocketDir is where wireguard-go devices answer `wg`: the UAPI
// socket of device D is <dir>/D.sock.
const DefaultSocketDir = "/var/run/wireguard"

// userspaceImpl is wireguard-go in this process over a TUN device of the
// device's name, with the TUN offloads (GSO/GRO through IFF_VNET_HDR) the
// module sets up. The TUN is persistent: when the agent stops, the
// interface, its address and its route stay, and the next agent attaches
// to them; only the tunnel stops while no agent runs.
type userspaceImpl struct {
	name      string
	mtu       int
	socketDir string
	netns     netns.NsHandle
	log       *slog.Logger

	mu   sync.Mutex
	tun  tun.Device
	dev  *device.Device
	uapi net.Listener
	// release gives back the lift of the default memory limit the
	// running device holds (internal/memlimit).
	release func()
}

func (u *userspaceImpl) kind() string { return ImplUserspace }

// running returns the device while it runs (nil after it closed itself:
// its TUN was deleted).
func (u *userspaceImpl) running() *device.Device {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.dev == nil {
		return nil
	}
	select {
	case <-u.dev.Wait():
		return nil
	default:
		return u.dev
	}
}

func (u *userspaceImpl) ensure(h *netlink.Handle) (netlink.Link, bool, error) {
	l, err := h.LinkByName(u.name)
	var nf netlink.LinkNotFoundError
	if err != nil && !errors.As(err, &nf) {
		return nil, false, fmt.Errorf("look up %s: %w", u.name, err)
	}
	if err == nil && l.Type() != "tuntap" {
		// A kernel device of an earlier run, or anything else.
		if err := h.LinkDel(l); err != nil {
			return nil, false, fmt.Errorf("delete %s (type %s): %w", u.name, l.Type(), err)
		}
		l = nil
	}
	if l != nil && u.running() != nil {
		return l, false, nil
	}
	u.stop()
	if err := netnsexec.Do(u.netns, u.start); err != nil {
		u.stop()
		return nil, false, err
	}
	l, err = h.LinkByName(u.name)
	if err != nil {
		return nil, false, fmt.Errorf("look up %s: %w", u.name, err)
	}
	return l, true, nil
}

// start creates the TUN (or attaches to the persistent one there), makes
// it persistent, starts wireguard-go on it with its sockets bound, and
// opens the UAPI socket. It runs in the device's namespace.
//
// Equivalent to: `ip tuntap add <name> mode tun` (persistent) and
// `wireguard-go <name>`.
func (u *userspaceImpl) start() error {
	t, err := tun.CreateTUN(u.name, u.mtu)
	if err != nil {
		return fmt.Errorf("create TUN %s: %w", u.name, err)
	}
	if err := setPersist(t.File()); err != nil {
		t.Close()
		return fmt.Errorf("make TUN %s persistent: %w", u.name, err)
	}
	dev := device.NewDevice(t, conn.NewDefaultBind(), u.logger())
	// Bring it up here: the UDP sockets are made in this thread's
	// namespace.
	if err := dev.Up(); err != nil {
		dev.Close()
		return fmt.Errorf("start %s: %w", u.name, err)
	}
	l, err := u.listenUAPI()
	if err != nil {
		dev.Close()
		return err
	}
	go serveUAPI(l, dev)
	u.mu.Lock()
	u.tun, u.dev, u.uapi = t, dev, l
	u.release = memlimit.Lift()
	u.mu.Unlock()
	return nil
}

// setPersist sets TUNSETPERSIST on the TUN's file.
func setPersist(f *os.File) error {
	sc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var ioErr error
	if err := sc.Control(func(fd uintptr) { ioErr = unix.IoctlSetInt(int(fd), unix.TUNSETPERSIST, 1) }); err != nil {
		return err
	}
	return ioErr
}

// listenUAPI opens <socketDir>/<name>.sock, where `wg` finds the device.
func (u *userspaceImpl) listenUAPI() (net.Listener, error) {
	if err := os.MkdirAll(u.socketDir, 0o755); err != nil {
		return nil, fmt.Errorf("UAPI socket directory: %w", err)
	}
	path := filepath.Join(u.socketDir, u.name+".sock")
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("remove stale UAPI socket: %w", err)
	}
	old := unix.Umask(0o077)
	l, err := net.Listen("unix", path)
	unix.Umask(old)
	if err != nil {
		return nil, fmt.Errorf("UAPI socket: %w", err)
	}
	return l, nil
}

// serveUAPI answers `wg` on l until l is closed.
func serveUAPI(l net.Listener, dev *device.Device) {
	for {
		c, err := l.Accept()
		if err != nil {
			return
		}
		go dev.IpcHandle(c)
	}
}

// logger sends wireguard-go's logs to the agent's logger at debug level
// (errors at warn); they never carry key material.
func (u *userspaceImpl) logger() *device.Logger {
	log := u.log.With("device", u.name)
	return &device.Logger{
		Verbosef: func(format string, args ...any) { log.Debug(fmt.Sprintf(format, args...)) },
		Errorf:   func(format string, args ...any) { log.Warn(fmt.Sprintf(format, args...)) },
	}
}

// stop closes the device and its UAPI socket; the persistent TUN stays.
func (u *userspaceImpl) stop() {
	u.mu.Lock()
	dev, l, release := u.dev, u.uapi, u.release
	u.dev, u.uapi, u.tun, u.release = nil, nil, nil, nil
	u.mu.Unlock()
	if release != nil {
		release()
	}
	if l != nil {
		l.Close()
	}
	if dev != nil {
		dev.Close()
	}
}

func (u *userspaceImpl) configure(cfg wgtypes.Config) error {
	dev := u.running()
	if dev == nil {
		return fmt.Errorf("wireguard: %s is not running", u.name)
	}
	var err error
	// listen_port rebinds the sockets: in the device's namespace.
	if cfgErr := netnsexec.Do(u.netns, func() error { err = dev.IpcSet(uapiConfig(cfg)); return nil }); cfgErr != nil {
		return cfgErr
	}
	return err
}

func (u *userspaceImpl) device() (*wgtypes.Device, error) {
	dev := u.running()
	if dev == nil {
		return nil, fmt.Errorf("wireguard: %s is not running", u.name)
	}
	s, err := dev.IpcGet()
	if err != nil {
		return nil, err
	}
	return parseUAPI(u.name, s)
}

func (u *userspaceImpl) close() error {
	u.stop()
	return nil
}
