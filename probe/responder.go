package probe

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"

	"github.com/vishvananda/netns"
	"golang.org/x/time/rate"
)

// DefaultPort is the UDP port of the responder: next to VXLAN's 8472,
// easy to remember in firewall rules. Every host of a cluster must use the
// same port.
const DefaultPort = 8473

// DefaultReplyRate bounds the replies a responder sends per second. A host
// receives on average as many probes as it sends (Config.Rate), so this
// leaves room for bursts while keeping the responder from being used to
// reflect floods.
const DefaultReplyRate = 1000

// ResponderConfig configures a Responder.
type ResponderConfig struct {
	Log *slog.Logger
	// Netns is the namespace the sockets are created in; 0 or
	// netns.None() means the caller's.
	Netns netns.NsHandle
	// Addrs are the addresses to answer on: the host's overlay address
	// (OverlayAddr of its own lease) and its public IP, of either family
	// or both. They need not be configured yet (IP_FREEBIND,
	// IPV6_FREEBIND).
	Addrs []netip.Addr
	// Port is the UDP port (DefaultPort when 0).
	Port int
	// ReplyRate bounds replies per second (DefaultReplyRate when 0).
	ReplyRate float64
	// Sources are the addresses answered (see SetSources); nil answers
	// every source. The agent gives the cluster's hosts.
	Sources *Sources
}

// Responder answers probe datagrams: each well-formed request is sent back
// to its source, from the address it was sent to, with the same length and
// the DF bit set (IPv6: not fragmented), when its source is one of
// Sources. Anything else is dropped without an answer, so that a datagram
// with a forged source cannot make the responder send at a third party.
type Responder struct {
	log     *slog.Logger
	conns   []*net.UDPConn
	lim     *rate.Limiter
	sources atomic.Pointer[Sources]
	replies atomic.Uint64
	dropped atomic.Uint64
	refused atomic.Uint64
}

// NewResponder opens one socket per address on cfg.Port, in cfg.Netns.
// Serve answers on them; Close releases them.
//
// Equivalent to a UDP echo server on each of `<addr>:8473`.
func NewResponder(cfg ResponderConfig) (*Responder, error) {
	if len(cfg.Addrs) == 0 {
		return nil, errors.New("probe: responder has no address")
	}
	if cfg.Port == 0 {
		cfg.Port = DefaultPort
	}
	if cfg.Port < 0 || cfg.Port > 65535 {
		return nil, fmt.Errorf("probe: responder port %d out of range", cfg.Port)
	}
	if cfg.ReplyRate <= 0 {
		cfg.ReplyRate = DefaultReplyRate
	}
	log := cfg.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	r := &Responder{log: log, lim: newLimiter(cfg.ReplyRate, int(cfg.ReplyRate)/10+1)}
	r.sources.Store(cfg.Sources)
	for _, a := range cfg.Addrs {
		if !a.IsValid() || a.Is4In6() || a.IsUnspecified() {
			r.Close()
			return nil, fmt.Errorf("probe: responder address %v is not an IPv4 or IPv6 address", a)
		}
		c, err := listenUDPIn(cfg.Netns, a, a.Is6(), cfg.Port)
		if err != nil {
			r.Close()
			return nil, err
		}
		r.conns = append(r.conns, c)
	}
	return r, nil
}

// SetSources replaces the set of sources answered; it may be called from
// any goroutine at any time, and takes effect with the next datagram.
func (r *Responder) SetSources(s *Sources) { r.sources.Store(s) }

// Serve answers probes until ctx is done or the sockets are closed, and
// then closes them. It returns ctx's error, or the error of a socket that
// failed (then every socket is closed): the responder is not serving.
// When Serve returns, the sockets are closed and their port is free.
func (r *Responder) Serve(ctx context.Context) error {
	stop := context.AfterFunc(ctx, r.Close)
	defer stop()
	var (
		wg   sync.WaitGroup
		once sync.Once
		ferr error
	)
	for _, c := range r.conns {
		wg.Go(func() {
			if err := r.serve(c); err != nil {
				once.Do(func() { ferr = err })
				r.Close()
			}
		})
	}
	wg.Wait()
	if ferr != nil && ctx.Err() == nil {
		return ferr
	}
	return ctx.Err()
}

// serve answers on c until it is closed (nil) or fails (its error).
func (r *Responder) serve(c *net.UDPConn) error {
	buf := make([]byte, 65536)
	for {
		n, from, err := c.ReadFromUDPAddrPort(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return nil
			}
			return fmt.Errorf("probe: responder read on %v: %w", c.LocalAddr(), err)
		}
		if !r.sources.Load().Allows(from.Addr()) {
			r.refused.Add(1)
			continue
		}
		h, err := parse(buf[:n])
		if err != nil || h.kind != kindRequest {
			r.dropped.Add(1)
			continue
		}
		if !r.lim.Allow() {
			r.dropped.Add(1)
			continue
		}
		buf[5] = kindReply
		if _, err := c.WriteToUDPAddrPort(buf[:n], from); err != nil {
			// EMSGSIZE: the way back is narrower than the way in; the
			// prober sees the large probe lost.
			r.log.Debug("probe responder: reply", "to", from, "size", n, "err", err)
			continue
		}
		r.replies.Add(1)
	}
}

// Replies is the number of probes answered; Dropped counts datagrams from
// allowed sources that were not probe requests or went over ReplyRate;
// Refused those from sources not in Sources.
func (r *Responder) Replies() uint64 { return r.replies.Load() }

// Dropped counts datagrams left unanswered (see Replies).
func (r *Responder) Dropped() uint64 { return r.dropped.Load() }

// Refused counts datagrams from sources not in Sources, left unanswered.
func (r *Responder) Refused() uint64 { return r.refused.Load() }

// Close closes the sockets; Serve returns. It may be called more than once.
func (r *Responder) Close() {
	for _, c := range r.conns {
		c.Close()
	}
}
