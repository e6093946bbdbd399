package agent

import (
	"cmp"
	"fmt"
	"time"

	"go.etcd.io/etcd/client/pkg/v3/transport"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
)

// Defaults of EtcdOptions' timeouts (--etcd-dial-timeout,
// --etcd-keepalive-timeout).
//
// A connection is given gRPC's own default to be set up (20 s), and a
// keepalive ping etcd's own server-side default to be answered (20 s,
// etcd --grpc-keepalive-timeout). Shorter ones turn an overloaded etcd
// into a reconnect storm: with 2,000 hosts booting at once against a
// starved cluster, 3 s and 5 s made the hosts dial 294,217 connections in
// 10 minutes, each dial costing both sides CPU and failing what was in
// flight; 20 s brought it to 13,577 (docs/scale.md). A dead member is
// still left in seconds: a refused connection fails at once, and a
// request on a connection that stops answering fails at its own deadline.
const (
	DefaultEtcdDialTimeout      = 20 * time.Second
	DefaultEtcdKeepAliveTimeout = 20 * time.Second
)

// etcdKeepAliveTime is how long a connection may be idle before the client
// pings it. etcd refuses pings more frequent than its
// --grpc-keepalive-min-time (5 s by default).
const etcdKeepAliveTime = 10 * time.Second

// etcdReconnect bounds gRPC's wait between attempts to reach an etcd
// endpoint again. gRPC's default backoff grows to 2 minutes: after an
// outage of a minute or two the agent would reach etcd back only a minute
// or more after it returned, too late to renew a lease whose TTL is
// shorter than that. One connection attempt per endpoint every few
// seconds costs nothing.
var etcdReconnect = backoff.Config{
	BaseDelay:  250 * time.Millisecond,
	Multiplier: 1.6,
	Jitter:     0.2,
	MaxDelay:   3 * time.Second,
}

// EtcdClientConfig is the etcd client configuration the agent uses for o
// (timeouts, keepalive, reconnect backoff, TLS, credentials), for programs
// that must connect as the agent does (the scale simulator adds its own
// dialer and counters to DialOptions).
func EtcdClientConfig(o EtcdOptions) (clientv3.Config, error) {
	dial := cmp.Or(o.DialTimeout, DefaultEtcdDialTimeout)
	cfg := clientv3.Config{
		Endpoints: o.Endpoints,
		// Bounds the first requests clientv3.New makes itself (the
		// authentication token), not the connection.
		DialTimeout:          dial,
		DialKeepAliveTime:    etcdKeepAliveTime,
		DialKeepAliveTimeout: cmp.Or(o.KeepAliveTimeout, DefaultEtcdKeepAliveTimeout),
		Username:             o.Username,
		Password:             o.Password,
		Logger:               zap.NewNop(),
		DialOptions: []grpc.DialOption{grpc.WithConnectParams(grpc.ConnectParams{
			Backoff:           etcdReconnect,
			MinConnectTimeout: dial,
		})},
	}
	if o.CertFile != "" || o.KeyFile != "" || o.CAFile != "" {
		info := transport.TLSInfo{CertFile: o.CertFile, KeyFile: o.KeyFile, TrustedCAFile: o.CAFile}
		tlsCfg, err := info.ClientConfig()
		if err != nil {
			return clientv3.Config{}, fmt.Errorf("etcd TLS: %w", err)
		}
		cfg.TLS = tlsCfg
	}
	return cfg, nil
}

// NewEtcdClient returns an etcd client for o, as the agent makes it, for
// the commands that read or write the cluster store without running the
// agent (`netagent status`, `netagent config`). It does not contact etcd.
func NewEtcdClient(o EtcdOptions) (*clientv3.Client, error) { return newEtcdClient(o) }

// newEtcdClient builds the etcd client of the options. It does not contact
// etcd: the first request does, and fails with a clear error when the
// endpoints, certificates or credentials are wrong.
func newEtcdClient(o EtcdOptions) (*clientv3.Client, error) {
	cfg, err := EtcdClientConfig(o)
	if err != nil {
		return nil, err
	}
	cli, err := clientv3.New(cfg)
	if err != nil {
		return nil, fmt.Errorf("etcd client for %v: %w", o.Endpoints, err)
	}
	return cli, nil
}
