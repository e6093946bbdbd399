package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"strings"

	"github.com/netagent/netagent/subnet/kubestore/kubeinfo"
)

// KubeOptions select the Kubernetes API as the cluster store, as
// flanneld's --kube-subnet-mgr does: this host's subnets are its Node's
// pod CIDRs, leases are published in the Node's annotations, the network
// config is a file.
type KubeOptions struct {
	// Enabled is --kube-subnet-mgr.
	Enabled bool
	// APIURL (--kube-api-url) and Kubeconfig (--kubeconfig-file) say how
	// to reach the API server; neither: the in-cluster service account.
	APIURL     string
	Kubeconfig string
	// NodeName is this host's Node (NODE_NAME, --node-name).
	NodeName string
	// AnnotationPrefix names the annotations (--kube-annotation-prefix).
	AnnotationPrefix string
	// SetNodeNetworkUnavailable (--set-node-network-unavailable, default
	// true) sets the Node's NetworkUnavailable condition false once the
	// lease is published, once per start.
	SetNodeNetworkUnavailable bool
	// NetConfigPath is the network config file (--net-config-path).
	NetConfigPath string
}

// LogValue lists the options for the start message.
func (k KubeOptions) LogValue() slog.Value {
	return slog.GroupValue(
		slog.String("api_url", k.APIURL),
		slog.String("kubeconfig", k.Kubeconfig),
		slog.String("node", k.NodeName),
		slog.String("annotation_prefix", k.AnnotationPrefix),
		slog.String("net_config_path", k.NetConfigPath),
	)
}

// KubeStore is the Kubernetes store as the agent uses it: a Store, plus
// what the status, the health checks and the store probe read of it.
type KubeStore interface {
	Store
	// Info describes the store for the status and the metrics.
	Info() kubeinfo.Info
	// HasSynced reports whether the Node informer has listed the Nodes.
	HasSynced() bool
	// Ready asks the API server whether it is ready (its /readyz).
	Ready(ctx context.Context) error
	Close() error
}

// KubeDriver opens the Kubernetes store. Package agent/kubemode provides
// it and registers itself when imported: the netagent-kube build imports
// it; the netagent build does not, so that a host on etcd does not carry
// the Kubernetes client (its package inits and pages: ~6 MiB of RSS), and
// `netagent run --kube-subnet-mgr` runs netagent-kube instead.
type KubeDriver interface {
	// Validate checks what only the driver can (Node name, annotation
	// prefix); errors name the flag.
	Validate(k KubeOptions) []error
	Open(ctx context.Context, k KubeOptions, log *slog.Logger) (KubeStore, error)
}

var kubeDriver KubeDriver

// RegisterKubeDriver makes d the Kubernetes store of kube mode.
func RegisterKubeDriver(d KubeDriver) { kubeDriver = d }

// HasKubeDriver reports whether this build can run in kube mode itself.
func HasKubeDriver() bool { return kubeDriver != nil }

// ErrNoKubeDriver is returned by Run in kube mode by a build without the
// Kubernetes store.
var ErrNoKubeDriver = errors.New("agent: this build has no Kubernetes store (kube mode runs netagent-kube)")

// openKube opens the Kubernetes store of the options and starts probing the
// API server.
func (a *Agent) openKube(ctx context.Context) (Store, func(), error) {
	if kubeDriver == nil {
		return nil, nil, ErrNoKubeDriver
	}
	s, err := kubeDriver.Open(ctx, a.opts.Kube, slog.New(errorsToState{a.log.Handler(), a.state}).With("store", StoreKubernetes))
	if err != nil {
		return nil, nil, err
	}
	a.state.update(func(st *state) { st.storeKind, st.kube = StoreKubernetes, s })
	go a.probeStore(ctx, s.Ready)
	return s, func() { s.Close() }, nil
}

// errorsToState passes log records on to Handler and records those at Warn
// and above in the state's recent errors, so that the status shows what
// the store met while the agent goes on (a patch of the Node refused by
// RBAC, a Node's malformed lease, the Node deleted).
type errorsToState struct {
	slog.Handler
	s *state
}

func (h errorsToState) Enabled(ctx context.Context, level slog.Level) bool {
	return level >= slog.LevelWarn || h.Handler.Enabled(ctx, level)
}

func (h errorsToState) Handle(ctx context.Context, r slog.Record) error {
	if r.Level >= slog.LevelWarn {
		var msg strings.Builder
		msg.WriteString(r.Message)
		r.Attrs(func(a slog.Attr) bool {
			fmt.Fprintf(&msg, " %s", a)
			return true
		})
		h.s.recordError(msg.String())
	}
	if !h.Handler.Enabled(ctx, r.Level) {
		return nil
	}
	return h.Handler.Handle(ctx, r)
}

func (h errorsToState) WithAttrs(attrs []slog.Attr) slog.Handler {
	return errorsToState{h.Handler.WithAttrs(attrs), h.s}
}

func (h errorsToState) WithGroup(name string) slog.Handler {
	return errorsToState{h.Handler.WithGroup(name), h.s}
}

// validate checks the kube options; errors name the flag.
func (k KubeOptions) validate() []error {
	var errs []error
	if k.NodeName == "" {
		errs = append(errs, errors.New("--node-name: kube mode (--kube-subnet-mgr) needs this host's Node name: set NODE_NAME (from the pod's spec.nodeName) or --node-name"))
	}
	if k.NetConfigPath == "" {
		errs = append(errs, errors.New("--net-config-path: empty"))
	}
	if k.APIURL != "" {
		if u, err := url.Parse(k.APIURL); err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
			errs = append(errs, fmt.Errorf("--kube-api-url: %q is not a URL such as https://10.0.0.1:6443", k.APIURL))
		}
	}
	if kubeDriver != nil {
		errs = append(errs, kubeDriver.Validate(k)...)
	}
	return errs
}
