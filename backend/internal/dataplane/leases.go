package dataplane

// Lease events become claims (conflict.go); the claims that win become
// the peers the kernel holds.

import (
	"errors"
	"fmt"
	"net/netip"
	"time"

	"github.com/netagent/netagent/backend"
	"github.com/netagent/netagent/lease"
)

// update takes one Update in; it applies small batches event by event and
// reports whether a full pass is needed instead. Each lease key is a claim
// in e.table; only the winners are peers (docs/compatibility.md §3.8).
func (e *Engine) update(u backend.Update) (full bool) {
	now := time.Now()
	incremental := e.firstDone
	var ch changes
	if u.Own != nil {
		own := e.leaseSubnet(u.Own)
		if !e.ownKnown || own != e.own {
			full = true
		}
		e.own = own
		e.ownKnown = true
		if e.ownKey != "" && e.ownKey != u.Own.Key() {
			ch.add(e.table.remove(e.ownKey))
		}
		e.ownKey = u.Own.Key()
		ch.add(e.table.set(e.ownClaim(u.Own)))
	}
	b := u.Batch
	if b != nil && b.Snapshot {
		e.resetTable()
		for i := range b.Events {
			l := &b.Events[i].Lease
			if l.Key() == e.ownKey {
				continue
			}
			if cl := e.claimOf(l); cl != nil {
				e.table.set(cl)
			}
		}
		e.syncAll(now)
		return true
	}
	if b != nil {
		incremental = incremental && len(b.Events) < bigBatch
		for i := range b.Events {
			ev := &b.Events[i]
			k := ev.Lease.Key()
			if k == e.ownKey {
				// The own lease comes as Update.Own.
				continue
			}
			var cl *claim
			if ev.Type == lease.EventAdded {
				cl = e.claimOf(&ev.Lease)
			}
			if cl != nil {
				ch.add(e.table.set(cl))
			} else {
				ch.add(e.table.remove(k))
			}
		}
	}
	incremental = incremental && !full
	e.applyChanges(ch, incremental, now)
	return full || !incremental
}

// resetTable forgets every claim but the own lease's.
func (e *Engine) resetTable() {
	own := e.table.get(e.ownKey)
	e.table = newClaims()
	if own != nil {
		e.table.set(own)
	}
}

// syncAll makes the peers the winners of the table, and the refused list
// its losers (after a snapshot).
func (e *Engine) syncAll(now time.Time) {
	var ch changes
	for _, cl := range e.table.byKey {
		ch.touched = append(ch.touched, cl)
	}
	for s := range e.peers {
		ch.subnets = append(ch.subnets, s)
	}
	e.mu.Lock()
	for k := range e.refused {
		if e.table.get(k) == nil {
			delete(e.refused, k)
			delete(e.warned, k)
			e.peersGen++
		}
	}
	e.mu.Unlock()
	e.applyChanges(ch, false, now)
}

// changes gathers what a table update may have changed: claims decided
// again, and subnets whose winner may differ.
type changes struct {
	touched []*claim
	subnets []netip.Prefix
	removed []string
}

func (c *changes) add(old *claim, touched []*claim) {
	if old != nil {
		c.subnets = append(c.subnets, old.subnet)
		c.removed = append(c.removed, old.key)
	}
	c.touched = append(c.touched, touched...)
}

// peerChange is a subnet whose peer changes from old to p (nil: none).
type peerChange struct {
	s      netip.Prefix
	old, p *peer
}

// applyChanges makes the peers of the changed subnets their winners',
// refreshes the refused list and, when incremental, programs the
// difference at once; otherwise a full pass follows.
func (e *Engine) applyChanges(ch changes, incremental bool, now time.Time) {
	todo := e.newWinners(ch, now)
	for _, c := range todo {
		e.setPeer(c.s, c.p)
	}
	e.noteRefused(ch)
	if incremental && len(todo) > 0 {
		e.program(todo)
	}
}

// newWinners returns the subnets touched by ch whose winner is no longer
// their peer.
func (e *Engine) newWinners(ch changes, now time.Time) []peerChange {
	subnets := make(map[netip.Prefix]bool, len(ch.subnets)+len(ch.touched))
	for _, s := range ch.subnets {
		subnets[s] = true
	}
	for _, cl := range ch.touched {
		subnets[cl.subnet] = true
	}
	var todo []peerChange
	for s := range subnets {
		if !s.IsValid() {
			continue
		}
		var p *peer
		if w := e.table.winner(s); w != nil && !w.own {
			p = w
		}
		old := e.peers[s]
		if old == p {
			continue
		}
		if p != nil {
			stamp(p, old, now)
		}
		todo = append(todo, peerChange{s, old, p})
	}
	return todo
}

// program applies changed peers in one exec: every removal first, then
// the installs (each peer's neighbour and fdb entry before its route,
// §5.2). Its cost does not depend on the number of peers.
func (e *Engine) program(todo []peerChange) {
	var removals, installs []op
	for _, c := range todo {
		var a applied
		if c.old != nil {
			a = c.old.applied
		}
		removals = append(removals, e.removeOps(c.s, a, c.p)...)
		if c.p != nil {
			installs = append(installs, e.peerOps(c.p)...)
		}
	}
	ops := append(removals, installs...)
	e.logOps(todo[0].s, ops)
	errs := e.exec(ops)
	failed := make(map[netip.Prefix]error)
	if e.isTunnel() {
		failed = e.programTunnel(todo)
	}
	for i := range ops {
		if errs[i] != nil {
			failed[ops[i].peer] = errors.Join(failed[ops[i].peer], errs[i])
		}
	}
	e.mu.Lock()
	e.countErrors(errs)
	for _, c := range todo {
		if c.p != nil {
			var conflict error
			if c.p.reachable {
				conflict = e.holdForeign(c.p)
			}
			e.settle(c.p, errors.Join(failed[c.s], conflict))
		}
	}
	e.mu.Unlock()
	for _, c := range todo {
		if err := failed[c.s]; err != nil {
			e.log.Warn("programming peer failed; the next pass retries", "lease", leaseName(c.s, c.p), "err", err)
		}
	}
}

// ownClaim is this host's lease as a claim: it holds its subnet and
// identity whatever its revision.
func (e *Engine) ownClaim(l *lease.Lease) *claim {
	cl := &claim{key: l.Key(), subnet: e.leaseSubnet(l).Masked(), publicIP: e.publicIP()}
	cl.rev, cl.own = l.CreateRevision, true
	if d := e.cfg.Device; d != nil && e.cfg.Identity == nil {
		cl.identity = d.MAC.String()
	} else if id, err := e.identity(e.leaseData(l)); err == nil {
		cl.identity = id
	}
	return cl
}

// claimOf turns another host's lease into a claim, or nil when the lease
// is none of this engine's business (no subnet of the family, malformed,
// this host's public IP, outside the network). A lease of another backend
// type is a refused claim: a network has one type, and a host of another
// cannot exchange traffic with this one (on a tunnel's network, its
// traffic would go in clear text or nowhere).
func (e *Engine) claimOf(l *lease.Lease) *claim {
	if l.Attrs.BackendType != e.cfg.Type {
		if !e.reportsForeign(l) {
			return nil
		}
		why := fmt.Sprintf("a host of backend type %q cannot be a peer on a %q network", l.Attrs.BackendType, e.cfg.Type)
		if e.isTunnel() {
			why += ": its traffic would go in clear text or nowhere"
		}
		return e.formClaim(l, why, backend.RefusedBackendType)
	}
	if why := e.keyForm(l); why != "" {
		return e.formClaim(l, why, backend.RefusedKeyForm)
	}
	p := e.parse(l)
	if p == nil {
		return nil
	}
	p.rev = l.CreateRevision
	if id, err := e.identity(e.leaseData(l)); err == nil {
		p.identity = id
	}
	return p
}

// formClaim is the claim of a key refused for its form: why, as reason.
func (e *Engine) formClaim(l *lease.Lease, why, reason string) *claim {
	cl := &claim{key: l.Key(), subnet: e.leaseSubnet(l).Masked(), publicIP: e.leasePublicIP(l)}
	cl.rev, cl.form, cl.wrongType = l.CreateRevision, why, reason == backend.RefusedBackendType
	return cl
}

// reportsForeign says whether this engine is the one of its group to
// refuse l for its backend type, so that a dual-stack network reports it
// once: the IPv4 engine when l has an IPv4 subnet, else the IPv6 one.
func (e *Engine) reportsForeign(l *lease.Lease) bool {
	if !e.cfg.IPv4 || !e.cfg.IPv6 {
		return true
	}
	return l.Subnet.IsValid() != e.v6()
}

// keyForm says why a lease's key has a form the config does not allow
// (a subnet of a family it does not enable), or "".
func (e *Engine) keyForm(l *lease.Lease) string {
	v4, v6 := e.cfg.IPv4, e.cfg.IPv6
	if !v4 && !v6 {
		v4, v6 = !e.v6(), e.v6()
	}
	switch {
	case l.Subnet.IsValid() && !v4:
		return "IPv4 is not enabled: the key must not name an IPv4 subnet"
	case l.IPv6Subnet.IsValid() && !v6:
		return "IPv6 is not enabled: the key must not name an IPv6 subnet"
	}
	return ""
}

// leaseData is a lease's backend data of the engine's family.
func (e *Engine) leaseData(l *lease.Lease) []byte {
	if e.v6() {
		return l.Attrs.BackendV6Data
	}
	return l.Attrs.BackendData
}

// leasePublicIP is a lease's public address of the engine's family.
func (e *Engine) leasePublicIP(l *lease.Lease) netip.Addr {
	if e.v6() {
		return l.Attrs.PublicIPv6
	}
	return l.Attrs.PublicIP
}

// identity is the backend identity that backend data claims: Config.Identity's,
// or for vxlan the VTEP MAC; "" when the backend has none.
func (e *Engine) identity(data []byte) (string, error) {
	if e.cfg.Identity != nil {
		return e.cfg.Identity(data)
	}
	if !e.isVXLAN() {
		return "", nil
	}
	mac, err := e.cfg.ParseMAC(data)
	if err != nil {
		return "", err
	}
	return mac.String(), nil
}
