package agent

import (
	"fmt"
	"time"

	"go.etcd.io/etcd/client/pkg/v3/transport"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

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
