package probe

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/vishvananda/netns"
	"golang.org/x/time/rate"
)

// Defaults of Config.
const (
	DefaultInterval = 10 * time.Second
	DefaultRate     = 20
	DefaultTimeout  = time.Second
	DefaultAttempts = 2
)

// ipUDPHeaders and ipv6UDPHeaders are the sizes of the IPv4 and UDP
// headers and of the IPv6 and UDP headers: a probe of MTU minus these
// bytes of payload fills the overlay MTU exactly.
const (
	ipUDPHeaders   = 28
	ipv6UDPHeaders = 48
)

// udpHeaders is the size of the IP and UDP headers of a datagram to or
// from a.
func udpHeaders(a netip.Addr) int {
	if a.Is6() {
		return ipv6UDPHeaders
	}
	return ipUDPHeaders
}

// family names a's address family for messages.
func family(a netip.Addr) string {
	if a.Is6() {
		return "IPv6"
	}
	return "IPv4"
}

// Config configures a Prober. Zero fields take the defaults above.
//
// A Prober probes one address family, LocalOverlay's: LocalPublic and
// every peer's addresses must be of it. A dual-stack host runs one Prober
// per family (see MergeStatus).
type Config struct {
	Log *slog.Logger
	// Netns is the namespace the sockets are created in; 0 or
	// netns.None() means the caller's.
	Netns netns.NsHandle
	// LocalOverlay is this host's overlay address (OverlayAddr of its
	// lease), IPv4 or IPv6: overlay probes are sent from it, so replies
	// come back through the overlay too. Required.
	LocalOverlay netip.Addr
	// LocalPublic is the source of underlay probes (the public IP, of
	// LocalOverlay's family); invalid means the kernel's choice.
	LocalPublic netip.Addr
	// Port is the peers' responder port (DefaultPort when 0).
	Port int
	// MTU is the overlay MTU (the backend's MTU()): the large probe is
	// MTU-28 bytes of UDP payload with DF set (IPv4), MTU-48 without
	// fragmentation (IPv6), so that its IP packet is MTU bytes. Required.
	MTU int
	// Interval is how often each peer is probed. With many peers it
	// stretches to peers*2/Rate, so that the rate bound holds without
	// starving anyone (Status.Interval says which applies).
	Interval time.Duration
	// Rate bounds the datagrams sent per second, all peers, probes and
	// retries together; Burst (default 2, so that a round's two probes
	// can go back to back) is how many may go at once.
	Rate  float64
	Burst int
	// Timeout is how long a probe waits for its answer; Attempts is how
	// many times a probe is sent before it counts as lost.
	Timeout  time.Duration
	Attempts int
	// Programmed tells whether the backend holds the peer's route and
	// entries (backend.PeerStatus.Programmed). When it says no, the peer
	// is CauseNotProgrammed and nothing is sent to its overlay address
	// (it would follow another route). Nil means always. It is called
	// from several goroutines at once and should be quick.
	Programmed func(Peer) bool
	// Offload, when set, is the overlay device's TX checksum offload:
	// reported in Status, and with AutoOffload turned off on trial when
	// peers answer on their public IP but not through the overlay (see
	// the package doc).
	Offload     OffloadSwitch
	AutoOffload bool
	// OnResult is called after each round with its result, on the
	// prober's loop: it must not block (update metrics and return).
	OnResult func(Result)
	// OnOffload is called for each change made to the offload setting,
	// on the prober's loop, after it is logged; it must not block.
	OnOffload func(OffloadEvent)
}

// Validate checks the required fields and ranges.
func (c *Config) Validate() error {
	var errs []error
	if !c.LocalOverlay.IsValid() || c.LocalOverlay.Is4In6() || c.LocalOverlay.IsUnspecified() {
		errs = append(errs, fmt.Errorf("LocalOverlay %v is not an IPv4 or IPv6 address", c.LocalOverlay))
	}
	if a := c.LocalPublic; a.IsValid() && (a.Is4In6() || a.Is4() != c.LocalOverlay.Is4()) {
		errs = append(errs, fmt.Errorf("LocalPublic %v is not an %s address like LocalOverlay", a, family(c.LocalOverlay)))
	}
	if hdr := udpHeaders(c.LocalOverlay); c.MTU-hdr < headerLen || c.MTU > 65535 {
		errs = append(errs, fmt.Errorf("MTU %d out of range [%d, 65535]", c.MTU, headerLen+hdr))
	}
	if c.Port < 0 || c.Port > 65535 {
		errs = append(errs, fmt.Errorf("Port %d out of range", c.Port))
	}
	if c.Interval < 0 || c.Rate < 0 || c.Burst < 0 || c.Timeout < 0 || c.Attempts < 0 {
		errs = append(errs, errors.New("Interval, Rate, Burst, Timeout and Attempts must not be negative"))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("probe: invalid config: %w", err)
	}
	return nil
}

func (c *Config) setDefaults() {
	if c.Log == nil {
		c.Log = slog.New(slog.DiscardHandler)
	}
	if c.Port == 0 {
		c.Port = DefaultPort
	}
	if c.Interval == 0 {
		c.Interval = DefaultInterval
	}
	if c.Rate == 0 {
		c.Rate = DefaultRate
	}
	if c.Burst == 0 {
		c.Burst = 2
	}
	if c.Timeout == 0 {
		c.Timeout = DefaultTimeout
	}
	if c.Attempts == 0 {
		c.Attempts = DefaultAttempts
	}
}

// peerState is one peer: its health (read by Status under Prober.mu) and
// its schedule (the loop's alone). The health is kept compact and
// expanded to a PeerHealth by Status: with 5,000 peers a PeerHealth each
// (240 bytes with the schedule) was the prober's largest part.
type peerState struct {
	Peer
	detail                     string
	rtt, smoothedRTT, largeRTT time.Duration
	// lastProbe and lastSuccess are Unix times in ns; 0: never.
	lastProbe, lastSuccess int64
	failures               int32
	// cause is an index in Causes plus one; 0: CauseNone.
	cause                              uint8
	probed, reachable, offloadRuledOut bool
	inFlight                           bool
	due                                time.Time
}

// health expands ps to what Status shows.
func (ps *peerState) health() PeerHealth {
	return PeerHealth{
		Peer: ps.Peer, Probed: ps.probed, Reachable: ps.reachable, Cause: ps.causeOf(),
		OffloadRuledOut: ps.offloadRuledOut, Detail: ps.detail,
		RTT: ps.rtt, SmoothedRTT: ps.smoothedRTT, LargeRTT: ps.largeRTT,
		LastProbe: unixTime(ps.lastProbe), LastSuccess: unixTime(ps.lastSuccess),
		ConsecutiveFailures: int(ps.failures),
	}
}

// causeOf is ps's Cause.
func (ps *peerState) causeOf() Cause {
	if ps.cause == 0 {
		return CauseNone
	}
	return Causes[ps.cause-1]
}

// causeCode is c's index in Causes plus one, 0 for CauseNone.
func causeCode(c Cause) uint8 {
	return uint8(slices.Index(Causes, c) + 1)
}

// unixTime is the local time of Unix time ns, the zero time for 0.
func unixTime(ns int64) time.Time {
	if ns == 0 {
		return time.Time{}
	}
	return time.Unix(0, ns)
}

// Prober probes peers through the overlay at a bounded rate and keeps
// their health. New opens its sockets, Run probes until ctx is done,
// SetPeers and Status may be called from any goroutine at any time.
type Prober struct {
	cfg Config
	// headers is the size of the IP and UDP headers of the family.
	headers  int
	overlay  *net.UDPConn
	underlay *net.UDPConn
	// icmp receives the peers' port unreachables (nil when it could not
	// be opened: then a peer without a responder looks like one that
	// does not answer).
	icmp *net.IPConn
	// lim is the bound on datagrams sent: every send takes a token, so
	// it holds whatever the number of peers, retries or rounds in flight.
	lim      *rate.Limiter
	seq      atomic.Uint64
	sent     atomic.Uint64
	answered atomic.Uint64
	refused  atomic.Uint64

	pendMu  sync.Mutex
	pending map[uint64]*pendingProbe

	peersCh chan struct{}

	mu       sync.Mutex
	want     []Peer // set by SetPeers, taken by the loop
	peers    map[netip.Prefix]*peerState
	sched    schedule
	interval time.Duration
	csum     *csumAuto
}

// New validates cfg and opens the prober's two sockets in cfg.Netns, of
// LocalOverlay's family: one bound to LocalOverlay, one to LocalPublic
// (both with DF set, or IPv6's equivalent). Close releases them.
func New(cfg Config) (*Prober, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg.setDefaults()
	p := &Prober{
		cfg:      cfg,
		headers:  udpHeaders(cfg.LocalOverlay),
		lim:      newLimiter(cfg.Rate, cfg.Burst),
		pending:  map[uint64]*pendingProbe{},
		peersCh:  make(chan struct{}, 1),
		peers:    map[netip.Prefix]*peerState{},
		interval: cfg.Interval,
	}
	p.seq.Store(rand.Uint64() >> 1)
	var err error
	v6 := cfg.LocalOverlay.Is6()
	if p.overlay, err = listenUDPIn(cfg.Netns, cfg.LocalOverlay, v6, 0); err != nil {
		return nil, err
	}
	if p.underlay, err = listenUDPIn(cfg.Netns, cfg.LocalPublic, v6, 0); err != nil {
		p.overlay.Close()
		return nil, err
	}
	if p.icmp, err = listenICMP(cfg.Netns, v6); err != nil {
		cfg.Log.Warn("probe: cannot receive port unreachables: a peer without a responder will be reported as not answering", "err", err)
		p.icmp = nil
	}
	if cfg.Offload != nil {
		// A trial lasts at most a few rounds of its peers, sent at once.
		trial := time.Duration(4*cfg.Attempts)*cfg.Timeout + 5*time.Second
		p.csum = newCsumAuto(cfg.Offload, cfg.AutoOffload, trial, cfg.Log)
	}
	return p, nil
}

// newLimiter is a token bucket of r tokens a second, at most burst saved
// up (and full to start with).
func newLimiter(r float64, burst int) *rate.Limiter {
	return rate.NewLimiter(rate.Limit(r), burst)
}

// Close closes the sockets. Run returns soon after if it is running.
func (p *Prober) Close() {
	p.overlay.Close()
	p.underlay.Close()
	if p.icmp != nil {
		p.icmp.Close()
	}
}

// SetPeers replaces the set of peers to probe. New peers are first probed
// at a random point of the next interval, so that probes spread out; a
// peer whose addresses changed starts afresh. Peers whose Overlay or
// PublicIP is not of the prober's family are left out (and logged).
func (p *Prober) SetPeers(peers []Peer) {
	want := make([]Peer, 0, len(peers))
	var other []netip.Prefix
	for _, pr := range peers {
		if !p.ofFamily(pr.Overlay) || pr.PublicIP.IsValid() && !p.ofFamily(pr.PublicIP) {
			other = append(other, pr.Subnet)
			continue
		}
		want = append(want, pr)
	}
	if len(other) > 0 {
		p.cfg.Log.Warn("probe: leaving out peers of another address family", "family", family(p.cfg.LocalOverlay), "peers", other)
	}
	p.mu.Lock()
	p.want = want
	p.mu.Unlock()
	select {
	case p.peersCh <- struct{}{}:
	default:
	}
}

// ofFamily tells whether a is an address of the prober's family.
func (p *Prober) ofFamily(a netip.Addr) bool {
	return a.IsValid() && !a.Is4In6() && a.Is4() == p.cfg.LocalOverlay.Is4()
}

// Status returns a snapshot of every peer's health and the counters.
func (p *Prober) Status() Status {
	p.mu.Lock()
	defer p.mu.Unlock()
	st := Status{Interval: p.interval, Rate: p.cfg.Rate, Sent: p.sent.Load(), Answered: p.answered.Load(), Refused: p.refused.Load()}
	for _, ps := range p.peers {
		st.Peers = append(st.Peers, ps.health())
	}
	slices.SortFunc(st.Peers, func(a, b PeerHealth) int { return comparePrefix(a.Subnet, b.Subnet) })
	if p.csum != nil {
		st.Offload = p.csum.status()
	}
	return st
}

// Offload returns the offload switch's state as the prober sees it, nil
// without Config.Offload: Status().Offload without the peers.
func (p *Prober) Offload() *OffloadStatus {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.csum == nil {
		return nil
	}
	return p.csum.status()
}

// MergeStatus merges snapshots of probers of different address families
// into one, as a dual-stack host shows its two probers: every peer (a
// peer's two leases have different subnets, so it appears once per
// family), sorted by subnet (IPv4 first), the sums of Rate (each prober
// has its own bound), Sent and Answered, the longest Interval, and the
// first Offload that is not nil.
func MergeStatus(sts ...Status) Status {
	var m Status
	for _, st := range sts {
		m.Peers = append(m.Peers, st.Peers...)
		m.Interval = max(m.Interval, st.Interval)
		m.Rate += st.Rate
		m.Sent += st.Sent
		m.Answered += st.Answered
		m.Refused += st.Refused
		if m.Offload == nil {
			m.Offload = st.Offload
		}
	}
	slices.SortFunc(m.Peers, func(a, b PeerHealth) int { return comparePrefix(a.Subnet, b.Subnet) })
	return m
}

func comparePrefix(a, b netip.Prefix) int {
	if c := a.Addr().Compare(b.Addr()); c != 0 {
		return c
	}
	return a.Bits() - b.Bits()
}

// roundStart is a round to run, sent to a worker.
type roundStart struct {
	peer    Peer
	started time.Time
}

// roundWorker runs the rounds it takes until rounds is closed and hands
// each result to the loop.
func (p *Prober) roundWorker(ctx context.Context, rounds <-chan roundStart, done chan<- roundDone) {
	for r := range rounds {
		done <- roundDone{r.peer, r.started, p.round(ctx, r.peer)}
	}
}

// roundDone is a finished round, sent to the loop.
type roundDone struct {
	peer    Peer
	started time.Time
	out     outcome
}

// Run probes the peers until ctx is done (then it returns nil after
// restoring any offload setting on trial) or the sockets fail. It closes
// the sockets when it returns: a Prober runs once.
func (p *Prober) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := context.AfterFunc(ctx, p.Close)
	defer stop()
	var wg sync.WaitGroup
	readErr := make(chan error, 2)
	for _, c := range []*net.UDPConn{p.overlay, p.underlay} {
		wg.Go(func() { readErr <- p.read(c) })
	}
	if p.icmp != nil {
		wg.Go(func() {
			// Without it the probes go on; refused ones look lost.
			if err := p.readRefusals(p.icmp); err != nil && ctx.Err() == nil {
				p.cfg.Log.Warn("probe: no longer receiving port unreachables", "err", err)
			}
		})
	}
	done := make(chan roundDone)
	inFlight := 0
	// Enough rounds in flight to keep the rate busy while each waits for
	// its answers.
	maxInFlight := int(p.cfg.Rate*p.cfg.Timeout.Seconds()*float64(p.cfg.Attempts)) + 4
	// Rounds run on workers, started when more rounds are in flight than
	// ever before and kept until Run returns: a worker's stack shrinks to
	// what a round uses, where a goroutine started for each round began
	// with the runtime's average stack size (32 kB in the agent, 1.3 MB
	// for 44 rounds in flight). rounds never holds more than maxInFlight.
	rounds := make(chan roundStart, maxInFlight)
	workers := 0
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	defer func() {
		cancel()
		// The workers finish what is queued at once (ctx is done).
		close(rounds)
		for ; inFlight > 0; inFlight-- {
			<-done
		}
		wg.Wait()
		if p.csum != nil {
			p.mu.Lock()
			p.csum.stop(time.Now())
			p.mu.Unlock()
			p.emitOffload()
		}
	}()
	for {
		now := time.Now()
		next := now.Add(time.Hour)
		p.mu.Lock()
		if p.csum != nil {
			p.csum.tick(now)
		}
		for inFlight < maxInFlight {
			k, at := p.popDue(now)
			if !k.IsValid() {
				if !at.IsZero() {
					next = at
				}
				break
			}
			ps := p.peers[k]
			ps.inFlight = true
			inFlight++
			if inFlight > workers {
				workers++
				wg.Go(func() { p.roundWorker(ctx, rounds, done) })
			}
			rounds <- roundStart{ps.Peer, now}
		}
		p.mu.Unlock()
		p.emitOffload()
		timer.Reset(next.Sub(now))
		select {
		case <-ctx.Done():
			return nil
		case err := <-readErr:
			if ctx.Err() != nil {
				return nil
			}
			return err
		case <-p.peersCh:
			p.syncPeers(now)
		case d := <-done:
			inFlight--
			p.finish(d)
		case <-timer.C:
		}
	}
}

// syncPeers applies the last SetPeers.
func (p *Prober) syncPeers(now time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.want == nil {
		return
	}
	want := map[netip.Prefix]Peer{}
	for _, pr := range p.want {
		want[pr.Subnet] = pr
	}
	p.want = nil
	for k := range p.peers {
		if _, ok := want[k]; !ok {
			delete(p.peers, k)
		}
	}
	p.interval = max(p.cfg.Interval, time.Duration(float64(len(want))*2/p.cfg.Rate*float64(time.Second)))
	for k, pr := range want {
		ps, ok := p.peers[k]
		if ok && ps.Peer == pr {
			continue
		}
		if ok && ps.inFlight {
			// Its round's result belongs to the old addresses: drop it
			// in finish, by comparing peers.
			*ps = peerState{Peer: pr, inFlight: true, due: ps.due}
			continue
		}
		ps = &peerState{Peer: pr}
		p.peers[k] = ps
		p.setDue(ps, now.Add(rand.N(p.interval)))
	}
}

// emitOffload hands the offload changes made so far to OnOffload.
func (p *Prober) emitOffload() {
	if p.csum == nil {
		return
	}
	p.mu.Lock()
	evs := p.csum.takeEvents()
	p.mu.Unlock()
	if p.cfg.OnOffload != nil {
		for _, ev := range evs {
			p.cfg.OnOffload(ev)
		}
	}
}

// finish records a round's outcome and schedules the next one.
func (p *Prober) finish(d roundDone) {
	now := time.Now()
	p.mu.Lock()
	ps, ok := p.peers[d.peer.Subnet]
	if !ok || ps.Peer != d.peer {
		if ok {
			ps.inFlight = false
			p.setDue(ps, now)
		}
		p.mu.Unlock()
		return
	}
	ps.inFlight = false
	// Next round in [0.9, 1.1] intervals: jitter keeps peers from lining
	// up again.
	p.setDue(ps, now.Add(time.Duration(float64(p.interval)*(0.9+0.2*rand.Float64()))))
	o := d.out
	res := Result{Peer: d.peer, Time: now, Reachable: o.cause == CauseNone, Cause: o.cause, RTT: o.rtt, LargeRTT: o.largeRTT, Sent: o.sent}
	if p.csum != nil {
		var noAnswer []netip.Prefix
		if o.cause == CauseNoAnswer {
			// Only a failure can start a trial, which takes in the
			// other peers failing alike.
			for k, q := range p.peers {
				if q.causeOf() == CauseNoAnswer && k != d.peer.Subnet {
					noAnswer = append(noAnswer, k)
				}
			}
		}
		reprobe, ruledOut := p.csum.observe(now, d.peer.Subnet, d.started, o.cause, o.smallOK, noAnswer)
		res.OffloadRuledOut = ruledOut
		for _, k := range reprobe {
			if q := p.peers[k]; q != nil && !q.inFlight {
				p.setDue(q, now)
			}
		}
	}
	ps.probed, ps.reachable, ps.cause, ps.offloadRuledOut, ps.detail = true, res.Reachable, causeCode(o.cause), res.OffloadRuledOut, o.detail
	ps.lastProbe = now.UnixNano()
	if o.rtt > 0 {
		ps.rtt = o.rtt
		if ps.smoothedRTT == 0 {
			ps.smoothedRTT = o.rtt
		} else {
			ps.smoothedRTT += (o.rtt - ps.smoothedRTT) / 8
		}
	}
	if o.largeRTT > 0 {
		ps.largeRTT = o.largeRTT
	}
	if res.Reachable {
		ps.lastSuccess, ps.failures = now.UnixNano(), 0
	} else {
		ps.failures++
	}
	p.mu.Unlock()
	p.emitOffload()
	if res.Reachable {
		p.cfg.Log.Debug("probe: peer reachable", "peer", d.peer.Subnet, "rtt", o.rtt, "large_rtt", o.largeRTT)
	} else {
		p.cfg.Log.Info("probe: peer unreachable", "peer", d.peer.Subnet, "overlay", d.peer.Overlay,
			"public_ip", d.peer.PublicIP, "cause", o.cause, "offload_ruled_out", res.OffloadRuledOut, "detail", o.detail)
	}
	if p.cfg.OnResult != nil {
		p.cfg.OnResult(res)
	}
}
