// Package nlretry retries netlink dumps that the kernel interrupted, in one
// place for every package that lists links, addresses, routes or
// neighbours.
package nlretry

import (
	"errors"

	"github.com/vishvananda/netlink"
)

// Attempts bounds the calls Dump makes.
const Attempts = 5

// Dump calls dump until it returns without netlink.ErrDumpInterrupted
// (the kernel's table changed during the dump, so the result may be
// inconsistent), at most Attempts times; the last result and error are
// returned when the dump keeps being interrupted.
func Dump[T any](dump func() (T, error)) (T, error) {
	var (
		res T
		err error
	)
	for range Attempts {
		res, err = dump()
		if !errors.Is(err, netlink.ErrDumpInterrupted) {
			return res, err
		}
	}
	return res, err
}
