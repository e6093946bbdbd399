package probe

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"syscall"
	"time"
)

// Errors of one probe.
var (
	errLost    = errors.New("probe: no answer")
	errRefused = errors.New("probe: port unreachable (no responder listening)")
	errTooBig  = errors.New("probe: larger than the path MTU")
	errNoRoute = errors.New("probe: no route")
)

// pendingProbe is a probe waiting for its answer.
type pendingProbe struct {
	dst   netip.Addr
	size  int
	reply chan answer
}

// answer is what came back for a probe: a reply at a time, or a port
// unreachable from the peer's kernel.
type answer struct {
	at      time.Time
	refused bool
}

// outcome is what one round found.
type outcome struct {
	cause         Cause
	smallOK       bool
	rtt, largeRTT time.Duration
	sent          int
	detail        string
}

// round probes peer: the small overlay probe; if answered, the full-MTU
// one; if not, the underlay probe, to tell the causes apart.
func (p *Prober) round(ctx context.Context, peer Peer) outcome {
	var o outcome
	if p.cfg.Programmed != nil && !p.cfg.Programmed(peer) {
		o.cause, o.detail = CauseNotProgrammed, "backend has not programmed the peer"
		return o
	}
	small := headerLen
	large := p.cfg.MTU - p.headers
	rtt, err := p.probe(ctx, p.overlay, peer.Overlay, small, &o.sent)
	switch {
	case err == nil:
		o.smallOK, o.rtt = true, rtt
		o.largeRTT, err = p.probe(ctx, p.overlay, peer.Overlay, large, &o.sent)
		if err != nil {
			o.cause, o.detail = CauseLargePacketsLost, fmt.Sprintf("%d-byte probe %s: %v", large+p.headers, p.noFrag(), err)
		}
		return o
	case errors.Is(err, errNoRoute):
		o.cause, o.detail = CauseNotProgrammed, err.Error()
		return o
	case errors.Is(err, errRefused):
		// The peer's kernel answered through the overlay: the path works,
		// its responder does not listen.
		o.cause, o.detail = CauseNoResponder, "overlay: "+err.Error()
		return o
	case ctx.Err() != nil:
		o.cause, o.detail = CauseNoAnswer, ctx.Err().Error()
		return o
	}
	o.detail = "overlay: " + err.Error()
	if !peer.PublicIP.IsValid() {
		o.cause = CauseNoAnswer
		return o
	}
	if _, uerr := p.probe(ctx, p.underlay, peer.PublicIP, small, &o.sent); uerr != nil {
		o.cause, o.detail = CauseUnderlayUnreachable, o.detail+"; underlay: "+uerr.Error()
		if errors.Is(uerr, errRefused) {
			// The host is up and says so: nothing listens on the port.
			o.cause = CauseNoResponder
		}
		return o
	}
	o.cause = CauseNoAnswer
	o.detail += "; underlay answers"
	return o
}

// noFrag says, for messages, how the large probe is kept whole.
func (p *Prober) noFrag() string {
	if p.headers == ipv6UDPHeaders {
		return "unfragmented (IPv6)"
	}
	return "with DF"
}

// probe sends a size-byte probe to dst on c up to Attempts times and
// returns the round trip time of the first answer. Every send waits for a
// token of the rate limiter. A send that fails for want of a route or for
// its size is not retried.
func (p *Prober) probe(ctx context.Context, c *net.UDPConn, dst netip.Addr, size int, sent *int) (time.Duration, error) {
	to := netip.AddrPortFrom(dst, uint16(p.cfg.Port))
	buf := make([]byte, size)
	var err error
	for range p.cfg.Attempts {
		if werr := p.lim.Wait(ctx); werr != nil {
			return 0, werr
		}
		seq := p.seq.Add(1)
		pp := &pendingProbe{dst: dst, size: size, reply: make(chan answer, 1)}
		p.pendMu.Lock()
		p.pending[seq] = pp
		p.pendMu.Unlock()
		start := time.Now()
		b := header{kind: kindRequest, size: size, seq: seq, sent: start.UnixNano()}.encode(buf)
		var got time.Time
		_, err = c.WriteToUDPAddrPort(b, to)
		if err == nil {
			*sent++
			p.sent.Add(1)
			got, err = p.await(ctx, pp)
		}
		p.pendMu.Lock()
		delete(p.pending, seq)
		p.pendMu.Unlock()
		if err == nil {
			return max(got.Sub(start), time.Nanosecond), nil
		}
		switch {
		case errors.Is(err, errRefused):
			return 0, err
		case errors.Is(err, syscall.EMSGSIZE):
			return 0, fmt.Errorf("%w: %v", errTooBig, err)
		case errors.Is(err, syscall.ENETUNREACH), errors.Is(err, syscall.EHOSTUNREACH), errors.Is(err, syscall.EINVAL):
			// EINVAL: a blackhole or prohibit route.
			return 0, fmt.Errorf("%w: %v", errNoRoute, err)
		case ctx.Err() != nil:
			return 0, ctx.Err()
		}
	}
	return 0, err
}

// await returns when pp's answer arrived, errRefused when a port
// unreachable did, or errLost after Timeout.
func (p *Prober) await(ctx context.Context, pp *pendingProbe) (time.Time, error) {
	t := time.NewTimer(p.cfg.Timeout)
	defer t.Stop()
	select {
	case a := <-pp.reply:
		if a.refused {
			return time.Time{}, errRefused
		}
		return a.at, nil
	case <-t.C:
		return time.Time{}, errLost
	case <-ctx.Done():
		return time.Time{}, ctx.Err()
	}
}

// read delivers the answers arriving on c to their pending probes until c
// is closed.
func (p *Prober) read(c *net.UDPConn) error {
	buf := make([]byte, 65536)
	for {
		n, from, err := c.ReadFromUDPAddrPort(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return nil
			}
			var nerr net.Error
			if errors.As(err, &nerr) && nerr.Timeout() {
				continue
			}
			return fmt.Errorf("probe: read: %w", err)
		}
		h, err := parse(buf[:n])
		if err != nil || h.kind != kindReply || from.Port() != uint16(p.cfg.Port) {
			continue
		}
		p.pendMu.Lock()
		pp := p.pending[h.seq]
		p.pendMu.Unlock()
		if pp == nil || pp.dst != from.Addr().Unmap() || pp.size != h.size {
			continue
		}
		select {
		case pp.reply <- answer{at: time.Now()}:
			p.answered.Add(1)
		default:
		}
	}
}
