package dataplane

import (
	"context"
	"errors"
	"slices"
	"sync"

	"github.com/netagent/netagent/backend"
	"github.com/netagent/netagent/lease"
)

// Group is the engines of one backend, one per enabled address family,
// IPv4 first. Each engine owns its family's kernel state; the group hands
// every update to each of them.
type Group []*Engine

// Run runs every engine until ctx is done or one of them fails, and
// forwards each update to all of them, in order. An Update is read-only
// to the engines, so they share it.
func (g Group) Run(ctx context.Context, updates <-chan backend.Update) error {
	if len(g) == 1 {
		return g[0].Run(ctx, updates)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	chans := make([]chan backend.Update, len(g))
	errs := make([]error, len(g))
	var wg sync.WaitGroup
	for i, e := range g {
		chans[i] = make(chan backend.Update, 1)
		wg.Go(func() {
			errs[i] = e.Run(ctx, chans[i])
			// An engine that stops ends the group: the agent
			// treats a returning backend as failed.
			cancel()
		})
	}
	fanOut(ctx, updates, chans)
	cancel()
	wg.Wait()
	return errors.Join(errs...)
}

// fanOut copies updates to every channel of out until ctx is done or
// updates is closed, then closes them.
func fanOut(ctx context.Context, updates <-chan backend.Update, out []chan backend.Update) {
	defer func() {
		for _, ch := range out {
			close(ch)
		}
	}()
	for {
		select {
		case <-ctx.Done():
			return
		case u, ok := <-updates:
			if !ok {
				<-ctx.Done()
				return
			}
			for _, ch := range out {
				select {
				case ch <- u:
				case <-ctx.Done():
					return
				}
			}
		}
	}
}

// Status merges the engines' snapshots: the IPv4 engine's device (if any)
// as Device, the IPv6 engine's as DeviceV6, every peer of both, summed
// counters, and as LastPass the older of the engines' last passes (zero
// until every engine has made one). As with Engine.Status, Peers must not
// be modified.
func (g Group) Status() backend.Status {
	if len(g) == 1 {
		st := g[0].Status()
		if g[0].v6() {
			st.Device, st.VtepMAC, st.DeviceV6, st.VtepMACV6 = "", "", st.Device, st.VtepMAC
		}
		return st
	}
	var st backend.Status
	st.Counters.Repairs = make(map[string]uint64)
	for i, e := range g {
		es := e.Status()
		if i == 0 {
			st.Type, st.MTU, st.LastPass = es.Type, es.MTU, es.LastPass
		}
		if e.v6() {
			st.DeviceV6, st.VtepMACV6 = es.Device, es.VtepMAC
		} else {
			st.Device, st.VtepMAC = es.Device, es.VtepMAC
		}
		if es.LastPass.IsZero() || es.LastPass.Before(st.LastPass) {
			st.LastPass = es.LastPass
		}
		st.Peers = append(st.Peers, es.Peers...)
		st.Counters.Passes += es.Counters.Passes
		st.Counters.NetlinkErrors += es.Counters.NetlinkErrors
		for k, v := range es.Counters.Repairs {
			st.Counters.Repairs[k] += v
		}
		st.Counters.EventLatency.Add(es.Counters.EventLatency)
	}
	slices.SortStableFunc(st.Peers, comparePeers)
	return st
}

// Families returns the address families cfg enables. A Config with
// neither (only a hand-built one: ParseConfig refuses it) means IPv4.
func Families(cfg *lease.Config) (v4, v6 bool) {
	if !cfg.EnableIPv4 && !cfg.EnableIPv6 {
		return true, false
	}
	return cfg.EnableIPv4, cfg.EnableIPv6
}
