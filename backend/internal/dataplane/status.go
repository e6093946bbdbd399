package dataplane

import (
	"maps"
	"slices"

	"github.com/netagent/netagent/backend"
)

// Status returns a snapshot of the engine's state; safe to call from any
// goroutine.
func (e *Engine) Status() backend.Status {
	e.mu.Lock()
	defer e.mu.Unlock()
	st := backend.Status{
		Type:     e.cfg.Type,
		MTU:      e.cfg.MTU,
		LastPass: e.lastPass,
		Counters: e.counters,
		Peers:    make([]backend.PeerStatus, 0, len(e.peers)),
	}
	st.Counters.Repairs = maps.Clone(e.counters.Repairs)
	if d := e.cfg.Device; d != nil {
		st.Device = d.Name
		st.VtepMAC = d.MAC.String()
	}
	for _, p := range e.peers {
		ps := backend.PeerStatus{
			Subnet:     p.subnet,
			PublicIP:   p.publicIP,
			Mode:       p.mode,
			Programmed: p.programmed,
			LastError:  p.lastErr,
		}
		if p.mac != nil {
			ps.VtepMAC = p.mac.String()
		}
		st.Peers = append(st.Peers, ps)
	}
	slices.SortFunc(st.Peers, func(a, b backend.PeerStatus) int {
		if c := a.Subnet.Addr().Compare(b.Subnet.Addr()); c != 0 {
			return c
		}
		return a.Subnet.Bits() - b.Subnet.Bits()
	})
	return st
}
