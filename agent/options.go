package agent

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/netagent/netagent/iface"
	"github.com/netagent/netagent/probe"
	"github.com/netagent/netagent/subnet/kubestore/kubeinfo"
	"github.com/netagent/netagent/subnetfile"
)

// Defaults shared with flanneld.
const (
	DefaultEtcdEndpoint   = "http://127.0.0.1:2379"
	DefaultEtcdPrefix     = "/coreos.com/network"
	DefaultDockerOptsFile = "/run/flannel/docker"
	DefaultLeaseTTL       = 24 * time.Hour
	DefaultRenewMargin    = time.Hour
	DefaultResync         = 30 * time.Second
	// DefaultMemoryLimit is Options.MemoryLimit when nothing sets it, a
	// floor (MemoryLimitFloor): above what an agent with 5,000 peers
	// holds live with its stacks and the runtime's metadata, so that the
	// collector holds the memory near it instead of letting the heap
	// reach twice the live heap, without running much more often
	// (bench/README.md, "Agent memory and start": ~7 MiB live and ~8
	// MiB of stacks and metadata with 5,000 peers, leaving ~6 MiB for
	// what a cold start or a resync pass allocates; 18 MiB makes the
	// collector run continuously).
	DefaultMemoryLimit = 21 << 20
)

// EtcdOptions say how to reach the cluster store.
type EtcdOptions struct {
	Endpoints []string
	Prefix    string
	CertFile  string
	KeyFile   string
	CAFile    string
	Username  string
	// Password is a secret: it is never logged or printed (see LogValue).
	Password string
	// DialTimeout is how long a connection to a member is given to be set
	// up, KeepAliveTimeout how long a keepalive ping on it is given to be
	// answered, before it is dropped and dialled again (the defaults when
	// zero).
	DialTimeout, KeepAliveTimeout time.Duration
}

// LogValue keeps the password out of every log line that includes the
// options.
func (e EtcdOptions) LogValue() slog.Value {
	return slog.GroupValue(
		slog.String("endpoints", strings.Join(e.Endpoints, ",")),
		slog.String("prefix", e.Prefix),
		slog.Bool("tls", e.CertFile != "" || e.CAFile != ""),
		slog.String("username", e.Username),
		slog.Bool("password", e.Password != ""),
		slog.Duration("dial_timeout", e.DialTimeout),
		slog.Duration("keepalive_timeout", e.KeepAliveTimeout),
	)
}

// Options configure one agent.
type Options struct {
	Etcd EtcdOptions
	// Kube, when Kube.Enabled, replaces etcd with the Kubernetes API
	// (--kube-subnet-mgr); Etcd is then unused.
	Kube           KubeOptions
	Iface          iface.Options
	SubnetFile     string
	DockerOptsFile string
	IPMasq         bool
	NFTables       bool
	LeaseTTL       time.Duration
	RenewMargin    time.Duration
	ResyncInterval time.Duration
	// MasqResync is how often the masquerade rules are checked and
	// repaired (flanneld's --iptables-resync).
	MasqResync time.Duration
	LogLevel   string
	LogFormat  string
	// StatusSocket is the unix socket `netagent status` and the CNI
	// plugin ask; "" for none.
	StatusSocket string
	// HealthzIP and HealthzPort are the TCP address serving /healthz,
	// /readyz and /metrics (flanneld's --healthz-ip and --healthz-port);
	// port 0 serves nothing.
	HealthzIP   netip.Addr
	HealthzPort int
	// Version is reported by the status socket.
	Version string
	// NoRepair makes the data plane report, not fix, kernel entries of
	// programmed peers found missing or wrong (--dataplane-repair=false;
	// a debugging aid).
	NoRepair bool
	// Probe, when set, runs the responder and the prober of package
	// probe: each peer is probed through the overlay every ProbeInterval
	// (or longer with many peers), at most ProbeRate datagrams a second,
	// on UDP port ProbePort of every host.
	Probe         bool
	ProbeInterval time.Duration
	ProbeRate     float64
	ProbePort     int
	// TxCsumOffload is the vxlan device's TX checksum offload:
	// OffloadAuto leaves it as the kernel made it and, with
	// AutoCsumOffload, lets the prober try it off when peers answer on
	// their public IP only; OffloadOn and OffloadOff set it and keep it
	// so (no trial).
	TxCsumOffload   string
	AutoCsumOffload bool
	// MemoryLimit is the Go runtime's soft memory limit, in bytes, that
	// `netagent run` sets for its process (runtime/debug.SetMemoryLimit;
	// --memory-limit); 0 leaves the runtime's own: GOMEMLIMIT's, or none.
	// The limit is the process's: Agent.Run does not apply it.
	MemoryLimit int64
	// MemoryLimitFloor makes MemoryLimit a floor that `netagent run`
	// raises with the live heap (to 1.5 times it and 8 MiB, when that is
	// more), so that a cluster larger than the default was set for does
	// not make the collector run continuously: so for the default, not
	// for a limit given.
	MemoryLimitFloor bool
	// WireGuardImpl is the wireguard backend's implementation: "auto"
	// (the kernel's when it can create the device, else userspace),
	// "kernel" or "userspace" (--wireguard-impl).
	WireGuardImpl string
	// WireGuardSocketDir holds the UAPI sockets of userspace WireGuard
	// devices, where `wg` finds them (--wireguard-socket-dir).
	WireGuardSocketDir string
}

// Values of Options.TxCsumOffload (--vxlan-tx-csum-offload).
const (
	OffloadAuto = "auto"
	OffloadOn   = "on"
	OffloadOff  = "off"
)

// DefaultOptions returns the options flanneld users expect when nothing is
// set.
func DefaultOptions() *Options {
	return &Options{
		Etcd: EtcdOptions{
			Endpoints:        []string{DefaultEtcdEndpoint},
			Prefix:           DefaultEtcdPrefix,
			DialTimeout:      DefaultEtcdDialTimeout,
			KeepAliveTimeout: DefaultEtcdKeepAliveTimeout,
		},
		Kube: KubeOptions{
			AnnotationPrefix:          kubeinfo.DefaultAnnotationPrefix,
			SetNodeNetworkUnavailable: true,
			NetConfigPath:             kubeinfo.DefaultNetConfigPath,
		},
		SubnetFile:     subnetfile.DefaultPath,
		DockerOptsFile: DefaultDockerOptsFile,
		LeaseTTL:       DefaultLeaseTTL,
		RenewMargin:    DefaultRenewMargin,
		ResyncInterval: DefaultResync,
		MasqResync:     2 * time.Second,
		LogLevel:       "info",
		LogFormat:      "text",
		StatusSocket:   DefaultStatusSocket,
		HealthzIP:      netip.IPv4Unspecified(),

		Probe:            true,
		ProbeInterval:    probe.DefaultInterval,
		ProbeRate:        probe.DefaultRate,
		ProbePort:        probe.DefaultPort,
		TxCsumOffload:    OffloadAuto,
		AutoCsumOffload:  true,
		MemoryLimit:      DefaultMemoryLimit,
		MemoryLimitFloor: true,

		WireGuardImpl:      "auto",
		WireGuardSocketDir: "/var/run/wireguard",
	}
}

// checkEndpoint checks one etcd endpoint: http or https with a host and,
// if given, a port from 1 to 65535, and nothing after the path; or a unix
// socket (unix://path, unixs://path).
func checkEndpoint(e string) error {
	u, err := url.Parse(e)
	if err != nil {
		return err
	}
	switch u.Scheme {
	case "unix", "unixs":
		if u.Host == "" && u.Path == "" {
			return errors.New("no socket path")
		}
		return nil
	case "http", "https":
	default:
		return fmt.Errorf("scheme %q is not http, https, unix or unixs", u.Scheme)
	}
	switch {
	case u.Hostname() == "":
		return errors.New("no host")
	case u.User != nil:
		return errors.New("credentials belong in --etcd-username and --etcd-password-file")
	case u.RawQuery != "" || u.Fragment != "" || (u.Path != "" && u.Path != "/"):
		return errors.New("a path, query or fragment is not allowed")
	}
	if p := u.Port(); p != "" {
		n, err := strconv.Atoi(p)
		if err != nil || n < 1 || n > 65535 {
			return fmt.Errorf("port %s is not between 1 and 65535", p)
		}
	} else if strings.HasSuffix(u.Host, ":") {
		return errors.New("empty port")
	}
	return nil
}

// checkFiles checks that the TLS files given can be read and hold what
// they should, naming the flag of each that does not (the etcd client
// itself would say only "open …" without the flag, or nothing at all
// until its first request times out).
func (e EtcdOptions) checkFiles() []error {
	var errs []error
	for _, f := range []struct{ flag, path string }{
		{"--etcd-certfile", e.CertFile}, {"--etcd-keyfile", e.KeyFile}, {"--etcd-cafile", e.CAFile},
	} {
		if f.path == "" {
			continue
		}
		if _, err := os.ReadFile(f.path); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", f.flag, err))
		}
	}
	if len(errs) > 0 {
		return errs
	}
	if e.CertFile != "" && e.KeyFile != "" {
		if _, err := tls.LoadX509KeyPair(e.CertFile, e.KeyFile); err != nil {
			errs = append(errs, fmt.Errorf("--etcd-certfile %s and --etcd-keyfile %s: %w", e.CertFile, e.KeyFile, err))
		}
	}
	if e.CAFile != "" {
		pem, _ := os.ReadFile(e.CAFile)
		if !x509.NewCertPool().AppendCertsFromPEM(pem) {
			errs = append(errs, fmt.Errorf("--etcd-cafile %s: no PEM certificate in it", e.CAFile))
		}
	}
	return errs
}

// Validate checks the options as a whole; errors name the flag. It reads
// the TLS files named, to say which one is missing or unreadable.
func (o *Options) Validate() error {
	var errs []error
	if o.Kube.Enabled {
		errs = append(errs, o.Kube.validate()...)
	} else {
		errs = append(errs, o.Etcd.validate()...)
	}
	if o.Etcd.DialTimeout < time.Second {
		errs = append(errs, fmt.Errorf("--etcd-dial-timeout: %v is too short (at least 1s)", o.Etcd.DialTimeout))
	}
	if o.Etcd.KeepAliveTimeout < time.Second {
		errs = append(errs, fmt.Errorf("--etcd-keepalive-timeout: %v is too short (at least 1s)", o.Etcd.KeepAliveTimeout))
	}
	if o.SubnetFile == "" {
		errs = append(errs, errors.New("--subnet-file: empty"))
	}
	if o.MemoryLimit < 0 {
		errs = append(errs, fmt.Errorf("--memory-limit: %d bytes is negative", o.MemoryLimit))
	}
	if o.LeaseTTL < 2*time.Second {
		errs = append(errs, fmt.Errorf("--subnet-lease-ttl: %v is too short (at least 2s)", o.LeaseTTL))
	}
	if o.RenewMargin <= 0 || o.RenewMargin >= o.LeaseTTL {
		errs = append(errs, fmt.Errorf("--subnet-lease-renew-margin: %v must be above 0 and below the lease TTL %v", o.RenewMargin, o.LeaseTTL))
	}
	if o.ResyncInterval < time.Second {
		errs = append(errs, fmt.Errorf("--resync-interval: %v is too short (at least 1s)", o.ResyncInterval))
	}
	if o.MasqResync < 100*time.Millisecond {
		errs = append(errs, fmt.Errorf("--iptables-resync: %v is too short", o.MasqResync))
	}
	if o.Iface.PublicIP.IsValid() && !o.Iface.PublicIP.Is4() {
		errs = append(errs, fmt.Errorf("--public-ip: %s is not an IPv4 address", o.Iface.PublicIP))
	}
	if o.Iface.PublicIPv6.IsValid() && o.Iface.PublicIPv6.Is4() {
		errs = append(errs, fmt.Errorf("--public-ipv6: %s is not an IPv6 address", o.Iface.PublicIPv6))
	}
	if o.HealthzPort < 0 || o.HealthzPort > 65535 {
		errs = append(errs, fmt.Errorf("--healthz-port: %d is not a TCP port (0 for none)", o.HealthzPort))
	}
	if o.HealthzPort != 0 && !o.HealthzIP.IsValid() {
		errs = append(errs, errors.New("--healthz-ip: no address to listen on"))
	}
	if o.ProbeInterval < 100*time.Millisecond {
		errs = append(errs, fmt.Errorf("--probe-interval: %v is too short (at least 100ms)", o.ProbeInterval))
	}
	if !(o.ProbeRate >= 1 && o.ProbeRate <= 10000) {
		errs = append(errs, fmt.Errorf("--probe-rate: %v is not between 1 and 10000 probes a second", o.ProbeRate))
	}
	if o.ProbePort < 1 || o.ProbePort > 65535 {
		errs = append(errs, fmt.Errorf("--probe-port: %d is not a UDP port", o.ProbePort))
	}
	switch o.TxCsumOffload {
	case OffloadAuto, OffloadOn, OffloadOff:
	default:
		errs = append(errs, fmt.Errorf("--vxlan-tx-csum-offload: %q is not auto, on or off", o.TxCsumOffload))
	}
	switch o.WireGuardImpl {
	case "auto", "kernel", "userspace":
	default:
		errs = append(errs, fmt.Errorf("--wireguard-impl: %q is not auto, kernel or userspace", o.WireGuardImpl))
	}
	switch o.LogLevel {
	case "debug", "info", "warn", "error":
	default:
		errs = append(errs, fmt.Errorf("--log-level: %q is not one of debug, info, warn, error", o.LogLevel))
	}
	switch o.LogFormat {
	case "text", "json":
	default:
		errs = append(errs, fmt.Errorf("--log-format: %q is not text or json", o.LogFormat))
	}
	return errors.Join(errs...)
}

// validate checks the etcd options; errors name the flag. It reads the TLS
// files named, to say which one is missing or unreadable.
func (e EtcdOptions) validate() []error {
	var errs []error
	if len(e.Endpoints) == 0 {
		errs = append(errs, errors.New("--etcd-endpoints: no endpoint given"))
	}
	for _, ep := range e.Endpoints {
		if err := checkEndpoint(ep); err != nil {
			shown := ep
			if u, perr := url.Parse(ep); perr == nil && u.User != nil {
				shown = u.Redacted() // never the password
			}
			errs = append(errs, fmt.Errorf("--etcd-endpoints: %q is not a URL such as http://10.0.0.1:2379: %w", shown, err))
		}
	}
	if !strings.HasPrefix(e.Prefix, "/") {
		errs = append(errs, fmt.Errorf("--etcd-prefix: %q must start with /", e.Prefix))
	}
	if (e.CertFile == "") != (e.KeyFile == "") {
		errs = append(errs, errors.New("--etcd-certfile and --etcd-keyfile go together"))
	}
	errs = append(errs, e.checkFiles()...)
	if e.Password != "" && e.Username == "" {
		errs = append(errs, errors.New("--etcd-password is set without --etcd-username"))
	}
	return errs
}
