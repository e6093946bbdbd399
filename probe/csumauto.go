package probe

import (
	"iter"
	"log/slog"
	"maps"
	"net/netip"
	"slices"
	"time"
)

// Offload event kinds (OffloadEvent.Kind).
const (
	// OffloadTrialOff: TX checksum offload was turned off to see whether
	// the peers that answer only on their public IP recover.
	OffloadTrialOff = "trial-off"
	// OffloadKeptOff: a peer recovered with offload off; it stays off.
	OffloadKeptOff = "kept-off"
	// OffloadRestored: no peer recovered; the setting was turned back on.
	OffloadRestored = "restored"
)

// OffloadEvent is a change the prober made to TX checksum offload.
type OffloadEvent struct {
	Time   time.Time
	Device string
	Kind   string
	// TxChecksum is the setting after the change.
	TxChecksum bool
	// Peers are the peers the trial was about.
	Peers []netip.Prefix
	// Err is set when the change failed (the setting is then unknown).
	Err error
}

// OffloadStatus is the overlay device's TX checksum offload as the prober
// last saw or set it.
type OffloadStatus struct {
	Device string
	// Auto is Config.AutoOffload.
	Auto bool
	// TxChecksum is the setting (as last read or set).
	TxChecksum bool
	// Trial is true while offload is off on trial.
	Trial bool
	// KeptOff is true when the prober turned offload off and kept it off
	// because a peer recovered; Since and Peers say when and for whom.
	KeptOff bool
	Since   time.Time
	Peers   []netip.Prefix
	// Err is the last error reading or setting it, if any.
	Err string
}

// csumAuto is the checksum offload state machine. It is owned by the
// prober's loop. From idle, a no-answer peer that is not ruled out makes
// it turn offload off (trial) and ask for every no-answer peer to be
// probed again; the first round started after that which gets an answer
// through the overlay keeps it off (kept); when every peer on trial has
// failed again, or the trial times out, it turns offload back on and
// rules those peers out until they have been reachable once.
type csumAuto struct {
	sw      OffloadSwitch
	auto    bool
	log     *slog.Logger
	timeout time.Duration
	// events are the changes not yet handed to Config.OnOffload; the
	// prober takes them once it no longer holds its lock.
	events []OffloadEvent

	st       OffloadStatus
	trialAt  time.Time
	trial    map[netip.Prefix]bool // peer → still waiting for its round
	ruledOut map[netip.Prefix]bool
}

func newCsumAuto(sw OffloadSwitch, auto bool, timeout time.Duration, log *slog.Logger) *csumAuto {
	a := &csumAuto{sw: sw, auto: auto, log: log, timeout: timeout, ruledOut: map[netip.Prefix]bool{}}
	a.st = OffloadStatus{Device: sw.Device(), Auto: auto}
	a.read()
	return a
}

// read refreshes st.TxChecksum from the device.
func (a *csumAuto) read() bool {
	on, err := a.sw.TxChecksum()
	if err != nil {
		a.st.Err = err.Error()
		return false
	}
	a.st.Err = ""
	a.st.TxChecksum = on
	return true
}

func (a *csumAuto) set(now time.Time, on bool, kind string, peers []netip.Prefix) bool {
	err := a.sw.SetTxChecksum(on)
	ev := OffloadEvent{Time: now, Device: a.sw.Device(), Kind: kind, TxChecksum: on, Peers: peers, Err: err}
	if err != nil {
		a.st.Err = err.Error()
		a.log.Error("probe: cannot change TX checksum offload", "device", ev.Device, "on", on, "err", err)
	} else {
		a.st.Err = ""
		a.st.TxChecksum = on
	}
	a.events = append(a.events, ev)
	return err == nil
}

// observe takes the outcome of a round to peer that started at started,
// with noAnswer the peers whose last round ended in CauseNoAnswer. It
// returns the peers to probe again at once, and whether offload is ruled
// out as the cause of peer's failure.
func (a *csumAuto) observe(now time.Time, peer netip.Prefix, started time.Time, cause Cause, smallOK bool, noAnswer []netip.Prefix) (reprobe []netip.Prefix, ruledOut bool) {
	if cause == CauseNone {
		delete(a.ruledOut, peer)
	}
	if cause == CauseNoAnswer && !a.st.Trial && !a.read() {
		return nil, false
	}
	switch {
	case a.st.Trial:
		if started.Before(a.trialAt) || !a.trial[peer] {
			break
		}
		if smallOK {
			peers := sortedPrefixes(maps.Keys(a.trial))
			a.st.Trial, a.trial = false, nil
			a.st.KeptOff, a.st.Since, a.st.Peers = true, now, peers
			a.log.Warn("probe: overlay path recovered with TX checksum offload off; keeping it off",
				"device", a.st.Device, "peer", peer, "peers", peers)
			a.events = append(a.events, OffloadEvent{Time: now, Device: a.st.Device, Kind: OffloadKeptOff, Peers: peers})
			return nil, false
		}
		a.trial[peer] = false
		if !slices.Contains(slices.Collect(maps.Values(a.trial)), true) {
			a.endTrial(now)
		}
	case cause == CauseNoAnswer && a.auto && !a.st.KeptOff && !a.ruledOut[peer]:
		if !a.st.TxChecksum {
			a.ruledOut[peer] = true
			break
		}
		a.trial = map[netip.Prefix]bool{peer: true}
		for _, p := range noAnswer {
			if !a.ruledOut[p] {
				a.trial[p] = true
			}
		}
		peers := sortedPrefixes(maps.Keys(a.trial))
		if !a.set(now, false, OffloadTrialOff, peers) {
			a.trial = nil
			break
		}
		a.st.Trial, a.trialAt = true, now
		a.log.Info("probe: peers answer on their public IP but not through the overlay; trying with TX checksum offload off",
			"device", a.st.Device, "peers", peers)
		return peers, false
	}
	if cause != CauseNoAnswer {
		return nil, false
	}
	// Offload off (by anyone) cannot be the cause.
	return nil, a.ruledOut[peer] || (!a.st.Trial && !a.st.TxChecksum)
}

func sortedPrefixes(seq iter.Seq[netip.Prefix]) []netip.Prefix {
	return slices.SortedFunc(seq, comparePrefix)
}

// tick ends a trial that has run longer than the timeout (its peers were
// removed, or their rounds are stuck).
func (a *csumAuto) tick(now time.Time) {
	if a.st.Trial && now.Sub(a.trialAt) > a.timeout {
		a.endTrial(now)
	}
}

// endTrial restores offload and rules the trial's peers out.
func (a *csumAuto) endTrial(now time.Time) {
	peers := sortedPrefixes(maps.Keys(a.trial))
	for _, p := range peers {
		a.ruledOut[p] = true
	}
	a.st.Trial, a.trial = false, nil
	a.set(now, true, OffloadRestored, peers)
	a.log.Warn("probe: overlay path did not recover with TX checksum offload off; restored it",
		"device", a.st.Device, "peers", peers)
}

// stop restores offload if a trial is running (the prober is stopping).
func (a *csumAuto) stop(now time.Time) {
	if a.st.Trial {
		a.endTrial(now)
	}
}

// takeEvents returns the events since the last call.
func (a *csumAuto) takeEvents() []OffloadEvent {
	evs := a.events
	a.events = nil
	return evs
}

// status returns a copy of the state for Status.
func (a *csumAuto) status() *OffloadStatus {
	st := a.st
	st.Peers = slices.Clone(st.Peers)
	return &st
}
