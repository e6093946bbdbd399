package agent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strings"

	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/client-go/rest"

	"github.com/netagent/netagent/lease"
	"github.com/netagent/netagent/subnet"
	"github.com/netagent/netagent/subnet/kubestore"
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

// kubeStore is a kubestore.Store as the agent's Store.
type kubeStore struct{ *kubestore.Store }

// HoldAndWatch holds this host's lease (waiting for the Node's pod CIDRs)
// and watches the Nodes' leases. The watch's Snapshot comes from the Node
// informer's cache, which Hold has waited for: one list per start, as with
// etcd.
func (s kubeStore) HoldAndWatch(ctx context.Context, cfg *lease.Config, opts subnet.AcquireOptions) (Holder, <-chan lease.Batch, error) {
	h, err := s.Hold(ctx, cfg, opts)
	if err != nil {
		return nil, nil, err
	}
	return h, s.WatchLeases(ctx), nil
}

// openKube opens the Kubernetes store of the options and starts probing the
// API server.
func (a *Agent) openKube(ctx context.Context) (Store, func(), error) {
	k := a.opts.Kube
	restCfg, err := kubestore.NewRESTConfig(k.APIURL, k.Kubeconfig)
	if err != nil {
		return nil, nil, err
	}
	s, err := kubestore.Open(ctx, restCfg, kubestore.Options{
		NodeName:         k.NodeName,
		AnnotationPrefix: k.AnnotationPrefix,
		NetConfigPath:    k.NetConfigPath,
		Log:              slog.New(errorsToState{a.log.Handler(), a.state}).With("store", StoreKubernetes),
	})
	if err != nil {
		return nil, nil, err
	}
	a.state.update(func(st *state) { st.storeKind, st.kube = StoreKubernetes, s })
	hc, err := rest.HTTPClientFor(restCfg)
	if err != nil {
		s.Close()
		return nil, nil, fmt.Errorf("agent: API server client: %w", err)
	}
	go a.probeStore(ctx, func(ctx context.Context) error { return apiServerReady(ctx, hc, restCfg.Host) })
	return kubeStore{s}, func() { s.Close() }, nil
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

// apiServerReady asks the API server's /readyz, which every identity may
// read (ClusterRole system:public-info-viewer).
//
// Equivalent to: `kubectl get --raw /readyz`.
func apiServerReady(ctx context.Context, hc *http.Client, host string) error {
	if !strings.Contains(host, "://") {
		host = "https://" + host
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimRight(host, "/")+"/readyz", nil)
	if err != nil {
		return err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("API server /readyz: %s: %s", resp.Status, strings.TrimSpace(string(body)))
	}
	return nil
}

// validate checks the kube options; errors name the flag.
func (k KubeOptions) validate() []error {
	var errs []error
	if k.NodeName == "" {
		errs = append(errs, errors.New("--node-name: kube mode (--kube-subnet-mgr) needs this host's Node name: set NODE_NAME (from the pod's spec.nodeName) or --node-name"))
	} else if msgs := validation.IsDNS1123Subdomain(k.NodeName); len(msgs) > 0 {
		errs = append(errs, fmt.Errorf("--node-name: %q is not a Node name: %s", k.NodeName, strings.Join(msgs, "; ")))
	}
	if err := checkAnnotationPrefix(k.AnnotationPrefix); err != nil {
		errs = append(errs, fmt.Errorf("--kube-annotation-prefix: %w", err))
	}
	if k.NetConfigPath == "" {
		errs = append(errs, errors.New("--net-config-path: empty"))
	}
	if k.APIURL != "" {
		if u, err := url.Parse(k.APIURL); err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
			errs = append(errs, fmt.Errorf("--kube-api-url: %q is not a URL such as https://10.0.0.1:6443", k.APIURL))
		}
	}
	return errs
}

// checkAnnotationPrefix checks that prefix forms annotation names the API
// server accepts, derived as flannel derives them: "example.com" →
// "example.com/backend-type", "example.com/net" →
// "example.com/net-backend-type".
func checkAnnotationPrefix(prefix string) error {
	name := prefix + "/backend-type"
	if strings.Contains(prefix, "/") {
		name = strings.TrimSuffix(prefix, "-") + "-backend-type"
		if strings.HasSuffix(prefix, "/") {
			name = prefix + "backend-type"
		}
	}
	if msgs := validation.IsQualifiedName(name); len(msgs) > 0 {
		return fmt.Errorf("%q does not form valid annotation names (%s): %s", prefix, name, strings.Join(msgs, "; "))
	}
	return nil
}
