package backend

import (
	"errors"
	"syscall"

	"github.com/vishvananda/netlink"

	"github.com/netagent/netagent/internal/nlretry"
)

// RouteProtocol marks every route a netagent backend installs
// (`ip route ... proto 78`). It is not in /etc/iproute2/rt_protos, so a
// restarted agent can tell its own routes, including orphans of peers that
// left while it was down, from everyone else's.
const RouteProtocol netlink.RouteProtocol = 0x4e

// RetryDump calls dump until it returns without netlink.ErrDumpInterrupted
// (the kernel's table changed during the dump), at most a few times: it is
// nlretry.Dump, named here for the backends.
func RetryDump[T any](dump func() (T, error)) (T, error) {
	return nlretry.Dump(dump)
}

// IsNotFound reports whether err says the object to delete is already gone.
func IsNotFound(err error) bool {
	return errors.Is(err, syscall.ENOENT) || errors.Is(err, syscall.ESRCH)
}
