package backend

import (
	"errors"
	"syscall"

	"github.com/vishvananda/netlink"
)

// RouteProtocol marks every route a netagent backend installs
// (`ip route ... proto 78`). It is not in /etc/iproute2/rt_protos, so a
// restarted agent can tell its own routes, including orphans of peers that
// left while it was down, from everyone else's.
const RouteProtocol netlink.RouteProtocol = 0x4e

// dumpRetries bounds the retries of a dump interrupted by a concurrent
// change.
const dumpRetries = 5

// RetryDump calls dump until it returns without netlink.ErrDumpInterrupted
// (the kernel's table changed during the dump, so the result may be
// inconsistent), at most a few times; the last error is returned when the
// dump keeps being interrupted.
func RetryDump[T any](dump func() (T, error)) (T, error) {
	var (
		res T
		err error
	)
	for range dumpRetries {
		res, err = dump()
		if !errors.Is(err, netlink.ErrDumpInterrupted) {
			return res, err
		}
	}
	return res, err
}

// IsNotFound reports whether err says the object to delete is already gone.
func IsNotFound(err error) bool {
	return errors.Is(err, syscall.ENOENT) || errors.Is(err, syscall.ESRCH)
}
