package dataplane

import (
	"cmp"
	"fmt"
	"slices"

	"github.com/netagent/netagent/backend"
)

// noteRefused brings the refused list in step with the decisions of the
// claims ch touched, and warns once per key, value and decision about a
// key that is refused.
func (e *Engine) noteRefused(ch changes) {
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, k := range ch.removed {
		if e.table.get(k) == nil {
			if _, ok := e.refused[k]; ok {
				delete(e.refused, k)
				e.peersGen++
			}
			delete(e.warned, k)
		}
	}
	for _, cl := range ch.touched {
		if e.table.get(cl.key) != cl {
			continue
		}
		if cl.reason == "" {
			if _, ok := e.refused[cl.key]; ok {
				delete(e.refused, cl.key)
				delete(e.warned, cl.key)
				e.peersGen++
				e.log.Info("lease key no longer refused", "lease", cl.key)
			}
			continue
		}
		r := e.refusal(cl)
		if e.refused[cl.key] != r {
			e.refused[cl.key] = r
			e.peersGen++
		}
		sig := fmt.Sprintf("%s|%s|%s|%s", r.Reason, r.Winner, r.PublicIP, cl.identity)
		if e.warned[cl.key] != sig {
			e.warned[cl.key] = sig
			msg := "refusing lease key: it conflicts with another key; the older key wins"
			if r.Reason == backend.RefusedBackendType {
				msg = "refusing lease key: its backend type is not the network's"
			}
			e.log.Warn(msg, "lease", cl.key, "reason", r.Reason, "detail", r.Detail, "winner", r.Winner, "public_ip", r.PublicIP)
		}
	}
}

// refusal is what status says of a refused claim.
func (e *Engine) refusal(cl *claim) backend.RefusedLease {
	r := backend.RefusedLease{Key: cl.key, Subnet: cl.subnet, Reason: cl.reason, Winner: cl.winner}
	if !cl.own {
		r.PublicIP = cl.publicIP
	}
	holder := cl.winner + ", created earlier"
	if cl.winner != "" && cl.winner == e.ownKey {
		holder = "this host's lease " + cl.winner
	}
	switch cl.reason {
	case backend.RefusedSubnet:
		r.Detail = fmt.Sprintf("subnet %s is held by %s", cl.subnet, holder)
	case backend.RefusedIdentity:
		name := e.cfg.IdentityName
		if name == "" {
			name = "backend identity"
		}
		r.Detail = fmt.Sprintf("%s %s is held by %s", name, cl.identity, holder)
	case backend.RefusedKeyForm, backend.RefusedBackendType:
		r.Detail = cl.form
	}
	return r
}

// refusedStatus lists the refused keys sorted by key; e.mu is held.
func (e *Engine) refusedStatus() []backend.RefusedLease {
	out := make([]backend.RefusedLease, 0, len(e.refused))
	for _, r := range e.refused {
		out = append(out, r)
	}
	slices.SortFunc(out, compareRefused)
	return out
}

func compareRefused(a, b backend.RefusedLease) int {
	if c := cmp.Compare(a.Key, b.Key); c != 0 {
		return c
	}
	return cmp.Compare(a.Reason, b.Reason)
}
