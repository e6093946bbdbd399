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
// every update to each of them. Engines are added with Add before Run.
type Group struct {
	engines []*Engine
	// ready is closed once every engine has finished a pass.
	ready chan struct{}
}

// Add adds an engine to the group (IPv4's first); not after Run started.
func (g *Group) Add(e *Engine) {
	if g.ready == nil {
		g.ready = make(chan struct{})
	}
	g.engines = append(g.engines, e)
}

// Ready is closed once every engine has finished its first pass (see
// Engine.Ready): the Ready of a backend.
func (g *Group) Ready() <-chan struct{} { return g.ready }

// Run runs every engine until ctx is done or one of them fails, and
// forwards each update to all of them, in order. An Update is read-only
// to the engines, so they share it. Run is called once.
func (g *Group) Run(ctx context.Context, updates <-chan backend.Update) error {
	go g.signalReady(ctx)
	if len(g.engines) == 1 {
		return g.engines[0].Run(ctx, updates)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	chans := make([]chan backend.Update, len(g.engines))
	errs := make([]error, len(g.engines))
	var wg sync.WaitGroup
	for i, e := range g.engines {
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

// signalReady closes g.ready when every engine is ready, unless ctx ends
// first.
func (g *Group) signalReady(ctx context.Context) {
	for _, e := range g.engines {
		select {
		case <-e.Ready():
		case <-ctx.Done():
			return
		}
	}
	close(g.ready)
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
func (g *Group) Status() backend.Status {
	if len(g.engines) == 1 {
		st := g.engines[0].Status()
		if g.engines[0].v6() {
			st.Device, st.VtepMAC, st.DeviceV6, st.VtepMACV6 = "", "", st.Device, st.VtepMAC
		}
		return st
	}
	var st backend.Status
	st.Counters.Repairs = make(map[string]uint64)
	for i, e := range g.engines {
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
		st.Refused = append(st.Refused, es.Refused...)
		st.Counters.Passes += es.Counters.Passes
		st.Counters.NetlinkErrors += es.Counters.NetlinkErrors
		st.Counters.ForeignRoutes += es.Counters.ForeignRoutes
		for k, v := range es.Counters.Repairs {
			st.Counters.Repairs[k] += v
		}
		st.Counters.EventLatency.Add(es.Counters.EventLatency)
	}
	slices.SortStableFunc(st.Peers, comparePeers)
	slices.SortStableFunc(st.Refused, compareRefused)
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
