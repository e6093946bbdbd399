package agent

import (
	"fmt"
	"time"

	"go.etcd.io/etcd/client/pkg/v3/transport"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
)

// reconnect bounds gRPC's wait between attempts to reach an etcd endpoint
// again. gRPC's default backoff grows to 2 minutes: after an outage of a
// minute or two the agent would reach etcd back only a minute or more after
// it returned, too late to renew a lease whose TTL is shorter than that.
// One connection attempt per endpoint every few seconds costs nothing.
var reconnect = grpc.ConnectParams{
	Backoff: backoff.Config{
		BaseDelay:  250 * time.Millisecond,
		Multiplier: 1.6,
		Jitter:     0.2,
		MaxDelay:   3 * time.Second,
	},
	MinConnectTimeout: 3 * time.Second,
}

// newEtcdClient builds the etcd client of the options. It does not contact
// etcd: the first request does, and fails with a clear error when the
// endpoints, certificates or credentials are wrong.
func newEtcdClient(o EtcdOptions) (*clientv3.Client, error) {
	cfg := clientv3.Config{
		Endpoints:            o.Endpoints,
		DialTimeout:          5 * time.Second,
		DialKeepAliveTime:    10 * time.Second,
		DialKeepAliveTimeout: 5 * time.Second,
		Username:             o.Username,
		Password:             o.Password,
		Logger:               zap.NewNop(),
		DialOptions:          []grpc.DialOption{grpc.WithConnectParams(reconnect)},
	}
	if o.CertFile != "" || o.KeyFile != "" || o.CAFile != "" {
		info := transport.TLSInfo{CertFile: o.CertFile, KeyFile: o.KeyFile, TrustedCAFile: o.CAFile}
		tlsCfg, err := info.ClientConfig()
		if err != nil {
			return nil, fmt.Errorf("etcd TLS: %w", err)
		}
		cfg.TLS = tlsCfg
	}
	cli, err := clientv3.New(cfg)
	if err != nil {
		return nil, fmt.Errorf("etcd client for %v: %w", o.Endpoints, err)
	}
	return cli, nil
}
