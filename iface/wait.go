package iface

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/netagent/netagent/internal/backoff"
)

// Retry delays of SelectWait: the first retry comes quickly (an interface
// being renamed or getting its address at boot), later ones back off.
const (
	waitFirst = 100 * time.Millisecond
	waitMax   = 2 * time.Second
)

// SelectWait is Select, retried with backoff while no interface is usable
// (at boot the interface may not exist, be down, or lack its address yet)
// or netlink fails. It returns as soon as Select succeeds, at once when the
// options are invalid, and when ctx is done an error that wraps both
// ctx.Err() and the last Select error. Each distinct error is logged once,
// at warning level; success after a failure is logged at info level. A nil
// log discards.
func SelectWait(ctx context.Context, h *netlink.Handle, opts Options, log *slog.Logger) (External, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	p, err := opts.compile()
	if err != nil {
		return External{}, err
	}
	delays := backoff.New(waitFirst, waitMax)
	var lastLogged string
	var timer *time.Timer
	for {
		ext, err := p.selectOnce(h)
		if err == nil {
			if lastLogged != "" {
				log.Info("external interface found", "iface", ext.Name, "addr", ext.Addr, "addr_v6", ext.AddrV6)
			}
			return ext, nil
		}
		if msg := err.Error(); msg != lastLogged {
			log.Warn("no usable external interface yet, retrying", "err", err)
			lastLogged = msg
		}
		delay := delays.Next()
		if timer == nil {
			timer = time.NewTimer(delay)
			defer timer.Stop()
		} else {
			timer.Reset(delay)
		}
		select {
		case <-ctx.Done():
			return External{}, fmt.Errorf("iface: waiting for the external interface: %w; last attempt: %w", ctx.Err(), err)
		case <-timer.C:
		}
	}
}
