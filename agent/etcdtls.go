package agent

import (
	"context"
	"crypto/tls"
	"errors"
	"log/slog"
	"net"
	"net/url"
	"time"

	"go.etcd.io/etcd/client/pkg/v3/transport"
)

// tlsProbeTimeout bounds the TLS check of one endpoint.
const tlsProbeTimeout = 5 * time.Second

// checkEtcdTLS makes a TLS handshake with each https endpoint, as the etcd
// client does, and logs an error that says why when it fails: a server
// certificate that the CA does not sign, or a client certificate the
// server wants and did not get. The etcd client itself waits for a
// connection it can never make and reports only that its requests time
// out. Endpoints that cannot be reached at all are not reported here: the
// requests' own errors and retries cover them.
func checkEtcdTLS(ctx context.Context, o EtcdOptions, log *slog.Logger) {
	if o.CertFile == "" && o.KeyFile == "" && o.CAFile == "" {
		return
	}
	info := transport.TLSInfo{CertFile: o.CertFile, KeyFile: o.KeyFile, TrustedCAFile: o.CAFile}
	base, err := info.ClientConfig()
	if err != nil {
		return // newEtcdClient reported it
	}
	for _, e := range o.Endpoints {
		u, err := url.Parse(e)
		if err != nil || u.Scheme != "https" {
			continue
		}
		if err := probeTLS(ctx, u.Host, base); err != nil {
			log.Error("etcd TLS handshake failed: check --etcd-cafile, --etcd-certfile and --etcd-keyfile", "endpoint", e, "err", err)
		}
	}
}

// probeTLS connects to hostport, completes a TLS handshake and waits
// briefly for the server's first word: under TLS 1.3 a server that refuses
// the client's certificate says so only after the handshake. It returns
// nil when the handshake passed, or when the endpoint cannot be reached.
func probeTLS(ctx context.Context, hostport string, base *tls.Config) error {
	ctx, cancel := context.WithTimeout(ctx, tlsProbeTimeout)
	defer cancel()
	var d net.Dialer
	raw, err := d.DialContext(ctx, "tcp", hostport)
	if err != nil {
		return nil
	}
	defer raw.Close()
	cfg := base.Clone()
	cfg.NextProtos = []string{"h2"}
	if cfg.ServerName == "" {
		cfg.ServerName, _, _ = net.SplitHostPort(hostport)
	}
	conn := tls.Client(raw, cfg)
	if err := conn.HandshakeContext(ctx); err != nil {
		return err
	}
	_ = conn.SetReadDeadline(time.Now().Add(time.Second))
	var buf [1]byte
	_, err = conn.Read(buf[:])
	var op *net.OpError
	if errors.As(err, &op) && op.Op == "remote error" {
		return err
	}
	return nil
}
