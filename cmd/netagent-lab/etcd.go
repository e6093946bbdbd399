package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/url"
	"strings"
	"time"

	"go.etcd.io/etcd/server/v3/embed"

	"github.com/netagent/netagent/internal/netnsguard"
)

// etcdReadyTimeout bounds how long a fresh single-member etcd may take to
// elect itself and serve.
const etcdReadyTimeout = time.Minute

// etcdOptions are the flags of `netagent-lab etcd`.
type etcdOptions struct {
	name             string
	dataDir          string
	listenClientURLs string
	advertiseURLs    string
	listenPeerURLs   string
	logLevel         string

	// A member of a multi-member cluster: every member's name=peer-URL,
	// "new" or "existing", and this member's advertised peer URLs
	// (default: --listen-peer-urls).
	initialCluster      string
	initialClusterState string
	advertisePeerURLs   string

	// Client TLS: the server's certificate and key (client URLs are then
	// https), and, with clientCertAuth, the CA that client certificates
	// must chain to.
	certFile, keyFile, trustedCAFile string
	clientCertAuth                   bool
}

// Validate reports a missing data directory or a malformed URL list.
func (o etcdOptions) Validate() error {
	if o.dataDir == "" {
		return errors.New("--data-dir is required")
	}
	if o.name == "" {
		return errors.New("--name must not be empty")
	}
	// In a fixed order: the advertised URLs default to the listen URLs, so
	// a bad --listen-client-urls is reported under its own name.
	for _, f := range []struct {
		name, list string
		https      bool
	}{
		{"--listen-client-urls", o.listenClientURLs, true},
		{"--advertise-client-urls", o.advertiseURLs, true},
		{"--listen-peer-urls", o.listenPeerURLs, false},
		{"--initial-advertise-peer-urls", o.advertisePeerURLs, false},
	} {
		if _, err := parseURLs(f.list, f.https); err != nil {
			return fmt.Errorf("%s: %w", f.name, err)
		}
	}
	if (o.certFile == "") != (o.keyFile == "") {
		return errors.New("--cert-file and --key-file go together")
	}
	if o.clientCertAuth && (o.certFile == "" || o.trustedCAFile == "") {
		return errors.New("--client-cert-auth needs --cert-file, --key-file and --trusted-ca-file")
	}
	switch o.initialClusterState {
	case "", "new", "existing":
	default:
		return fmt.Errorf("--initial-cluster-state: %q is not new or existing", o.initialClusterState)
	}
	return nil
}

// parseURLs parses a comma-separated list of http URLs (or https ones,
// when https is true); an empty list is nil, not an error.
func parseURLs(list string, https bool) ([]url.URL, error) {
	if list == "" {
		return nil, nil
	}
	var urls []url.URL
	for _, s := range strings.Split(list, ",") {
		u, err := url.Parse(strings.TrimSpace(s))
		if err != nil {
			return nil, err
		}
		if https && u.Scheme == "https" && u.Host != "" {
			urls = append(urls, *u)
			continue
		}
		if u.Scheme != "http" || u.Host == "" {
			return nil, fmt.Errorf("%q: want http://host:port", s)
		}
		urls = append(urls, *u)
	}
	return urls, nil
}

// runEtcd runs an embedded etcd member (alone, or one of the members of
// --initial-cluster) until ctx is done. It prints
// "etcd ready" on stdout once the member serves clients.
func runEtcd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("etcd", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var o etcdOptions
	fs.StringVar(&o.name, "name", "lab", "member name")
	fs.StringVar(&o.dataDir, "data-dir", "", "data directory (required)")
	fs.StringVar(&o.listenClientURLs, "listen-client-urls", "http://127.0.0.1:2379", "comma-separated URLs to serve clients on")
	fs.StringVar(&o.advertiseURLs, "advertise-client-urls", "", "comma-separated client URLs to advertise (default: --listen-client-urls)")
	fs.StringVar(&o.listenPeerURLs, "listen-peer-urls", "http://127.0.0.1:2380", "comma-separated URLs for peer traffic (single member: loopback)")
	fs.StringVar(&o.logLevel, "log-level", "warn", "etcd log level: debug, info, warn, error")
	fs.StringVar(&o.initialCluster, "initial-cluster", "", "name=peer-URL of every member, comma-separated (default: this member alone)")
	fs.StringVar(&o.initialClusterState, "initial-cluster-state", "new", "new, or existing to join a running cluster")
	fs.StringVar(&o.advertisePeerURLs, "initial-advertise-peer-urls", "", "this member's peer URLs as the others reach them (default: --listen-peer-urls)")
	fs.StringVar(&o.certFile, "cert-file", "", "server certificate for client connections (https client URLs)")
	fs.StringVar(&o.keyFile, "key-file", "", "key of --cert-file")
	fs.StringVar(&o.trustedCAFile, "trusted-ca-file", "", "CA that client certificates must chain to")
	fs.BoolVar(&o.clientCertAuth, "client-cert-auth", false, "require a client certificate signed by --trusted-ca-file")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return usageError{err}
	}
	if fs.NArg() > 0 {
		return usageError{fmt.Errorf("etcd: unexpected arguments %q", fs.Args())}
	}
	if o.advertiseURLs == "" {
		o.advertiseURLs = o.listenClientURLs
	}
	if err := o.Validate(); err != nil {
		return usageError{fmt.Errorf("etcd: %w", err)}
	}
	if err := netnsguard.Check(); err != nil {
		return err
	}

	cfg := embed.NewConfig()
	cfg.Name = o.name
	cfg.Dir = o.dataDir
	cfg.ListenClientUrls, _ = parseURLs(o.listenClientURLs, true)
	cfg.AdvertiseClientUrls, _ = parseURLs(o.advertiseURLs, true)
	cfg.ListenPeerUrls, _ = parseURLs(o.listenPeerURLs, false)
	cfg.AdvertisePeerUrls = cfg.ListenPeerUrls
	if o.advertisePeerURLs != "" {
		cfg.AdvertisePeerUrls, _ = parseURLs(o.advertisePeerURLs, false)
	}
	cfg.InitialCluster = cfg.InitialClusterFromName(o.name)
	if o.initialCluster != "" {
		cfg.InitialCluster = o.initialCluster
	}
	if o.initialClusterState != "" {
		cfg.ClusterState = o.initialClusterState
	}
	cfg.ClientTLSInfo.CertFile = o.certFile
	cfg.ClientTLSInfo.KeyFile = o.keyFile
	cfg.ClientTLSInfo.TrustedCAFile = o.trustedCAFile
	cfg.ClientTLSInfo.ClientCertAuth = o.clientCertAuth
	cfg.Logger = "zap"
	cfg.LogLevel = o.logLevel
	cfg.LogOutputs = []string{"stderr"}

	e, err := embed.StartEtcd(cfg)
	if err != nil {
		return fmt.Errorf("etcd: start: %w", err)
	}
	defer e.Close()

	timer := time.NewTimer(etcdReadyTimeout)
	defer timer.Stop()
	select {
	case <-e.Server.ReadyNotify():
	case err := <-e.Err():
		return fmt.Errorf("etcd: %w", err)
	case <-timer.C:
		return fmt.Errorf("etcd: not ready after %v", etcdReadyTimeout)
	case <-ctx.Done():
		return nil
	}
	fmt.Fprintf(stdout, "etcd ready: name=%s client-urls=%s data-dir=%s\n", o.name, o.advertiseURLs, o.dataDir)

	select {
	case <-ctx.Done():
		return nil
	case err := <-e.Err():
		return fmt.Errorf("etcd: %w", err)
	}
}
