package scalesim

import (
	"context"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.etcd.io/etcd/api/v3/etcdserverpb"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"
)

// Counter counts the gRPC traffic of every simulated host's etcd client,
// by method: requests (unary calls and messages sent on streams), messages
// received, and the bytes of both (the protobuf size of each message, not
// counting gRPC and HTTP/2 framing). Its methods are safe for concurrent
// use.
type Counter struct {
	mu      sync.Mutex
	methods map[string]*methodCount
	// failedTxns counts transactions whose compares failed: for the
	// lease code, an acquisition that lost a race.
	failedTxns atomic.Uint64
	// dials counts the TCP connections the clients opened (or tried to):
	// one per client and member, plus every reconnection.
	dials atomic.Uint64
}

type methodCount struct {
	sent, recv, sentBytes, recvBytes atomic.Uint64
	// wait is the sum of the unary calls' durations (Unix nanoseconds).
	wait atomic.Int64
}

// MethodStats are one method's counts.
type MethodStats struct {
	Sent, Recv, SentBytes, RecvBytes uint64
	// Wait is the summed duration of the method's unary calls (time from
	// the call to its answer, connection set-up included).
	Wait time.Duration
}

// MeanWait is the mean duration of one unary call.
func (m MethodStats) MeanWait() time.Duration {
	if m.Sent == 0 {
		return 0
	}
	return m.Wait / time.Duration(m.Sent)
}

// Snapshot is the counts at one moment, by short method name ("Range",
// "Txn", "LeaseGrant", "Watch", ...).
type Snapshot struct {
	Methods    map[string]MethodStats
	FailedTxns uint64
	// Dials is the number of connections the clients dialled.
	Dials uint64
}

// Total is the sum over every method.
func (s Snapshot) Total() MethodStats {
	var t MethodStats
	for _, m := range s.Methods {
		t.Sent += m.Sent
		t.Recv += m.Recv
		t.SentBytes += m.SentBytes
		t.RecvBytes += m.RecvBytes
	}
	return t
}

// Sub is s minus an earlier snapshot.
func (s Snapshot) Sub(old Snapshot) Snapshot {
	d := Snapshot{Methods: make(map[string]MethodStats), FailedTxns: s.FailedTxns - old.FailedTxns, Dials: s.Dials - old.Dials}
	for k, m := range s.Methods {
		o := old.Methods[k]
		d.Methods[k] = MethodStats{m.Sent - o.Sent, m.Recv - o.Recv, m.SentBytes - o.SentBytes, m.RecvBytes - o.RecvBytes, m.Wait - o.Wait}
	}
	return d
}

// NewCounter returns an empty Counter.
func NewCounter() *Counter { return &Counter{methods: make(map[string]*methodCount)} }

// Snapshot returns the counts now.
func (c *Counter) Snapshot() Snapshot {
	c.mu.Lock()
	defer c.mu.Unlock()
	s := Snapshot{Methods: make(map[string]MethodStats, len(c.methods)), FailedTxns: c.failedTxns.Load(), Dials: c.dials.Load()}
	for k, m := range c.methods {
		s.Methods[k] = MethodStats{m.sent.Load(), m.recv.Load(), m.sentBytes.Load(), m.recvBytes.Load(), time.Duration(m.wait.Load())}
	}
	return s
}

func (c *Counter) method(full string) *methodCount {
	name := full[strings.LastIndexByte(full, '/')+1:]
	c.mu.Lock()
	defer c.mu.Unlock()
	m := c.methods[name]
	if m == nil {
		m = &methodCount{}
		c.methods[name] = m
	}
	return m
}

// size is msg's encoded size (etcd's messages are protobuf API v2).
func size(msg any) uint64 {
	if m, ok := msg.(proto.Message); ok {
		return uint64(proto.Size(m))
	}
	return 0
}

// DialOptions are the interceptors to give a client (clientv3.Config's
// DialOptions).
func (c *Counter) DialOptions() []grpc.DialOption {
	return []grpc.DialOption{
		grpc.WithChainUnaryInterceptor(c.unary),
		grpc.WithChainStreamInterceptor(c.stream),
	}
}

func (c *Counter) unary(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
	m := c.method(method)
	m.sent.Add(1)
	m.sentBytes.Add(size(req))
	start := time.Now()
	err := invoker(ctx, method, req, reply, cc, opts...)
	m.wait.Add(int64(time.Since(start)))
	if err == nil {
		m.recv.Add(1)
		m.recvBytes.Add(size(reply))
		if t, ok := reply.(*etcdserverpb.TxnResponse); ok && !t.Succeeded {
			c.failedTxns.Add(1)
		}
	}
	return err
}

func (c *Counter) stream(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
	s, err := streamer(ctx, desc, cc, method, opts...)
	if err != nil {
		return nil, err
	}
	return &countedStream{ClientStream: s, m: c.method(method)}, nil
}

type countedStream struct {
	grpc.ClientStream
	m *methodCount
}

func (s *countedStream) SendMsg(msg any) error {
	err := s.ClientStream.SendMsg(msg)
	if err == nil {
		s.m.sent.Add(1)
		s.m.sentBytes.Add(size(msg))
	}
	return err
}

func (s *countedStream) RecvMsg(msg any) error {
	err := s.ClientStream.RecvMsg(msg)
	if err == nil {
		s.m.recv.Add(1)
		s.m.recvBytes.Add(size(msg))
	}
	return err
}
