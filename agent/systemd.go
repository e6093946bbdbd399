package agent

import (
	"context"
	"fmt"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"
)

// notify tells systemd about the agent's state when it runs under
// Type=notify (NOTIFY_SOCKET is set); a no-op elsewhere.
func (a *Agent) notify(msg string) {
	if _, err := daemon.SdNotify(false, msg); err != nil {
		a.log.Debug("sd_notify failed", "err", err)
	}
}

// notifyStatus sets the one-line status `systemctl status` shows.
func (a *Agent) notifyStatus(format string, args ...any) {
	a.notify("STATUS=" + fmt.Sprintf(format, args...))
}

// watchdog ticks at half systemd's WatchdogSec (WATCHDOG_USEC) when the
// unit sets one. Only the agent's own loops ping on its ticks, so that an
// agent whose loop is wedged stops pinging and systemd restarts it.
type watchdog struct{ t *time.Ticker }

func (a *Agent) newWatchdog() *watchdog {
	d, err := daemon.SdWatchdogEnabled(false)
	if err != nil {
		a.log.Warn("systemd watchdog settings unusable: not pinging it", "err", err)
	}
	if err != nil || d <= 0 {
		return &watchdog{}
	}
	return &watchdog{t: time.NewTicker(d / 2)}
}

// C is the ticker's channel; nil (never ready) without a watchdog.
func (w *watchdog) C() <-chan time.Time {
	if w.t == nil {
		return nil
	}
	return w.t.C
}

// Stop stops the ticker.
func (w *watchdog) Stop() {
	if w.t != nil {
		w.t.Stop()
	}
}

// ping tells systemd the agent is alive.
func (a *Agent) ping() { a.notify("WATCHDOG=1") }

// pingWhile pings the watchdog from a goroutine until the returned function
// is called: for the blocking waits of Run outside the serving loop
// (waiting for a network config), which hold no state that can wedge.
func (a *Agent) pingWhile(ctx context.Context) (stop func()) {
	wd := a.newWatchdog()
	if wd.t == nil {
		return func() {}
	}
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer wd.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-wd.C():
				a.ping()
			}
		}
	}()
	return func() {
		cancel()
		<-done
	}
}
