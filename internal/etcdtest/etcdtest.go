// Package etcdtest starts a real, single-member etcd server inside a test
// process (go.etcd.io/etcd/server/v3/embed), listening on 127.0.0.1 only,
// and a loopback TCP proxy to cut clients off from it.
//
// Every test binary that imports this package links the etcd server, which
// makes it large and slow to link: import it only from the few packages
// whose tests need a store.
package etcdtest

import (
	"context"
	"fmt"
	"net"
	"net/url"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"
)

// readyTimeout bounds how long Start and Restart wait for the server.
const readyTimeout = 30 * time.Second

// Option adjusts the server's embed.Config before it starts.
type Option func(*embed.Config)

// WithConfig applies f to the embed.Config before every start (for example
// to set AutoCompactionMode and AutoCompactionRetention).
func WithConfig(f func(*embed.Config)) Option { return Option(f) }

// Server is a running embedded etcd member.
type Server struct {
	dir       string
	clientURL url.URL
	peerURL   url.URL
	opts      []Option

	mu      sync.Mutex
	etcd    *embed.Etcd
	stopped bool
}

// Start starts a server on free loopback ports with its data in
// t.TempDir() and no logging (errors come back from Start), waits until it
// serves, and stops it when the test ends.
func Start(t testing.TB, opts ...Option) *Server {
	t.Helper()
	s := &Server{dir: t.TempDir(), opts: opts}
	var err error
	for attempt := 0; attempt < 5; attempt++ {
		var cport, pport int
		if cport, pport, err = freePorts(); err != nil {
			continue
		}
		s.clientURL = url.URL{Scheme: "http", Host: fmt.Sprintf("127.0.0.1:%d", cport)}
		s.peerURL = url.URL{Scheme: "http", Host: fmt.Sprintf("127.0.0.1:%d", pport)}
		if err = s.start(); err == nil {
			break
		}
	}
	if err != nil {
		t.Fatalf("etcdtest: start: %v", err)
	}
	t.Cleanup(s.Stop)
	return s
}

// freePorts asks the kernel for two free loopback ports. Another process
// may take one before etcd binds it: Start retries in that case.
func freePorts() (int, int, error) {
	var ports [2]int
	for i := range ports {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return 0, 0, err
		}
		defer l.Close()
		ports[i] = l.Addr().(*net.TCPAddr).Port
	}
	return ports[0], ports[1], nil
}

func (s *Server) start() error {
	cfg := embed.NewConfig()
	cfg.Name = "etcdtest"
	cfg.Dir = s.dir
	cfg.ListenClientUrls = []url.URL{s.clientURL}
	cfg.AdvertiseClientUrls = []url.URL{s.clientURL}
	cfg.ListenPeerUrls = []url.URL{s.peerURL}
	cfg.AdvertisePeerUrls = []url.URL{s.peerURL}
	cfg.InitialCluster = cfg.InitialClusterFromName(cfg.Name)
	// Quiet: an embedded server logs errors even on a clean shutdown.
	cfg.LogLevel = "error"
	cfg.ZapLoggerBuilder = embed.NewZapLoggerBuilder(zap.NewNop())
	// Test data need not survive a power cut; Stop closes cleanly.
	cfg.UnsafeNoFsync = true
	for _, o := range s.opts {
		o(cfg)
	}
	e, err := embed.StartEtcd(cfg)
	if err != nil {
		return err
	}
	select {
	case <-e.Server.ReadyNotify():
	case err := <-e.Err():
		e.Close()
		return fmt.Errorf("etcd failed before ready: %w", err)
	case <-time.After(readyTimeout):
		e.Close()
		return fmt.Errorf("etcd not ready after %v", readyTimeout)
	}
	s.mu.Lock()
	s.etcd, s.stopped = e, false
	s.mu.Unlock()
	return nil
}

// Endpoints returns the client URLs, for clientv3.Config.Endpoints.
func (s *Server) Endpoints() []string { return []string{s.clientURL.String()} }

// Addr returns the client listener's host:port (for a Proxy).
func (s *Server) Addr() string { return s.clientURL.Host }

// Client returns a new client of the server, closed when the test ends.
func (s *Server) Client(t testing.TB) *clientv3.Client {
	t.Helper()
	return NewClient(t, s.Endpoints())
}

// NewClient returns a client of the given endpoints with a short dial
// timeout, closed when the test ends.
func NewClient(t testing.TB, endpoints []string, opts ...func(*clientv3.Config)) *clientv3.Client {
	t.Helper()
	cfg := clientv3.Config{
		Endpoints:   endpoints,
		DialTimeout: 5 * time.Second,
		Logger:      zap.NewNop(),
	}
	for _, o := range opts {
		o(&cfg)
	}
	cli, err := clientv3.New(cfg)
	if err != nil {
		t.Fatalf("etcdtest: client: %v", err)
	}
	t.Cleanup(func() { cli.Close() })
	return cli
}

// Stop stops the server and waits until it has shut down; clients stay
// open and reconnect after Restart. Stopping twice is harmless.
func (s *Server) Stop() {
	s.mu.Lock()
	e, stopped := s.etcd, s.stopped
	s.stopped = true
	s.mu.Unlock()
	if e == nil || stopped {
		return
	}
	e.Close()
}

// Restart stops the server if it runs and starts it again on the same data
// directory and ports.
func (s *Server) Restart(t testing.TB) {
	t.Helper()
	s.Stop()
	var err error
	// The old listeners may take a moment to release the ports.
	deadline := time.Now().Add(readyTimeout)
	for {
		if err = s.start(); err == nil || time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		t.Fatalf("etcdtest: restart: %v", err)
	}
}

// Compact compacts the store's history up to rev (physically, so that a
// watch from an older revision fails with ErrCompacted).
func (s *Server) Compact(t testing.TB, rev int64) {
	t.Helper()
	cli, err := clientv3.New(clientv3.Config{Endpoints: s.Endpoints(), DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatalf("etcdtest: compact: %v", err)
	}
	defer cli.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := cli.Compact(ctx, rev, clientv3.WithCompactPhysical()); err != nil {
		t.Fatalf("etcdtest: compact %d: %v", rev, err)
	}
}
