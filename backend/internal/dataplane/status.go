package dataplane

import (
	"maps"
	"slices"

	"github.com/netagent/netagent/backend"
)

// Status returns a snapshot of the engine's state; safe to call from any
// goroutine. Its Peers, sorted by subnet, are shared with other callers
// and must not be modified: they are built again only after a peer
// changed, so that polling Status costs nothing per peer.
func (e *Engine) Status() backend.Status {
	e.mu.Lock()
	defer e.mu.Unlock()
	st := backend.Status{
		Type:     e.cfg.Type,
		MTU:      e.cfg.MTU,
		LastPass: e.lastPass,
		Counters: e.counters,
	}
	st.Counters.Repairs = maps.Clone(e.counters.Repairs)
	if d := e.cfg.Device; d != nil {
		st.Device = d.Name
		st.VtepMAC = d.MAC.String()
	} else if e.isTunnel() {
		st.Device = e.devName()
	}
	if e.statusPeers == nil || e.statusGen != e.peersGen {
		e.statusPeers, e.statusRefused, e.statusGen = e.peerStatus(), e.refusedStatus(), e.peersGen
	}
	st.Peers, st.Refused = e.statusPeers, e.statusRefused
	return st
}

// peerStatus lists the peers sorted by subnet; e.mu is held.
func (e *Engine) peerStatus() []backend.PeerStatus {
	peers := make([]backend.PeerStatus, 0, len(e.peers))
	for _, p := range e.peers {
		ps := backend.PeerStatus{
			Key:        p.key,
			Subnet:     p.subnet,
			PublicIP:   p.publicIP,
			Mode:       p.mode,
			Programmed: p.programmed,
			LastError:  p.lastErr,
		}
		ps.ForeignRoute = e.conflicts[p.subnet]
		if p.mac != nil {
			ps.VtepMAC = p.mac.String()
		}
		peers = append(peers, ps)
	}
	slices.SortFunc(peers, comparePeers)
	return peers
}

func comparePeers(a, b backend.PeerStatus) int {
	if c := a.Subnet.Addr().Compare(b.Subnet.Addr()); c != 0 {
		return c
	}
	return a.Subnet.Bits() - b.Subnet.Bits()
}
