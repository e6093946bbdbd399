package probe

import (
	"fmt"
	"runtime"
	"unsafe"

	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// OffloadSwitch reads and sets TX checksum offload of one device. Ethtool
// is the kernel's; the prober takes the interface so that its decision
// logic is tested on its own.
type OffloadSwitch interface {
	// Device names the device, for logs and status.
	Device() string
	// TxChecksum reports whether TX checksum offload is on.
	TxChecksum() (bool, error)
	// SetTxChecksum turns it on or off.
	SetTxChecksum(on bool) error
}

// Ethtool sets a device's offloads through the SIOCETHTOOL ioctl on a
// socket of the device's namespace (an ioctl acts on the namespace of the
// socket it is made on, whichever thread makes it).
type Ethtool struct {
	fd     int
	device string
}

var _ OffloadSwitch = (*Ethtool)(nil)

// OpenEthtool opens a control socket in ns (0 or netns.None(): the
// caller's namespace) for device. The device need not exist yet; each call
// names it. Close releases the socket.
func OpenEthtool(ns netns.NsHandle, device string) (*Ethtool, error) {
	if len(device) == 0 || len(device) >= unix.IFNAMSIZ {
		return nil, fmt.Errorf("probe: bad device name %q", device)
	}
	e := &Ethtool{fd: -1, device: device}
	err := inNetns(ns, func() error {
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return fmt.Errorf("probe: ethtool socket: %w", err)
		}
		e.fd = fd
		return nil
	})
	if err != nil {
		return nil, err
	}
	return e, nil
}

// Device returns the device name.
func (e *Ethtool) Device() string { return e.device }

// Close closes the control socket.
func (e *Ethtool) Close() error {
	if e.fd < 0 {
		return nil
	}
	err := unix.Close(e.fd)
	e.fd = -1
	return err
}

// ethtoolValue is struct ethtool_value.
type ethtoolValue struct {
	cmd  uint32
	data uint32
}

// ifreqData is struct ifreq with ifr_data.
type ifreqData struct {
	name [unix.IFNAMSIZ]byte
	data unsafe.Pointer
	_    [16]byte
}

func (e *Ethtool) ioctl(v *ethtoolValue) error {
	var ifr ifreqData
	copy(ifr.name[:], e.device)
	ifr.data = unsafe.Pointer(v)
	_, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(e.fd), unix.SIOCETHTOOL, uintptr(unsafe.Pointer(&ifr)))
	runtime.KeepAlive(v)
	if errno != 0 {
		return errno
	}
	return nil
}

// TxChecksum reports whether TX checksum offload of the device is on.
//
// Equivalent to: `ethtool -k <dev> | grep tx-checksumming`.
func (e *Ethtool) TxChecksum() (bool, error) {
	v := ethtoolValue{cmd: unix.ETHTOOL_GTXCSUM}
	if err := e.ioctl(&v); err != nil {
		return false, fmt.Errorf("probe: %s: get tx checksum offload: %w", e.device, err)
	}
	return v.data != 0, nil
}

// SetTxChecksum turns TX checksum offload of the device on or off.
//
// Equivalent to: `ethtool -K <dev> tx on|off`.
func (e *Ethtool) SetTxChecksum(on bool) error {
	v := ethtoolValue{cmd: unix.ETHTOOL_STXCSUM}
	if on {
		v.data = 1
	}
	if err := e.ioctl(&v); err != nil {
		return fmt.Errorf("probe: %s: set tx checksum offload %t: %w", e.device, on, err)
	}
	return nil
}
