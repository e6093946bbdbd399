// Package kubemode is the agent's Kubernetes store (--kube-subnet-mgr):
// importing it registers it with package agent. The netagent-kube build
// imports it; the netagent build does not and runs netagent-kube for kube
// mode, so that hosts on etcd carry none of the Kubernetes client.
package kubemode

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"

	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/client-go/rest"

	"github.com/netagent/netagent/agent"
	"github.com/netagent/netagent/lease"
	"github.com/netagent/netagent/subnet"
	"github.com/netagent/netagent/subnet/kubestore"
)

func init() { agent.RegisterKubeDriver(driver{}) }

// driver opens kubestore.Stores for the agent.
type driver struct{}

// Validate checks the Node name and the annotation prefix as the API
// server will.
func (driver) Validate(k agent.KubeOptions) []error {
	var errs []error
	if k.NodeName != "" {
		if msgs := validation.IsDNS1123Subdomain(k.NodeName); len(msgs) > 0 {
			errs = append(errs, fmt.Errorf("--node-name: %q is not a Node name: %s", k.NodeName, strings.Join(msgs, "; ")))
		}
	}
	if err := kubestore.CheckAnnotationPrefix(k.AnnotationPrefix); err != nil {
		errs = append(errs, fmt.Errorf("--kube-annotation-prefix: %w", err))
	}
	return errs
}

// Open opens the store: the API server's client configuration as flanneld
// builds it, the Store (which checks the identity's RBAC and starts the
// Node informer), and an HTTP client for the readiness probe.
func (driver) Open(ctx context.Context, k agent.KubeOptions, log *slog.Logger) (agent.KubeStore, error) {
	restCfg, err := kubestore.NewRESTConfig(k.APIURL, k.Kubeconfig)
	if err != nil {
		return nil, err
	}
	s, err := kubestore.Open(ctx, restCfg, kubestore.Options{
		NodeName:                k.NodeName,
		AnnotationPrefix:        k.AnnotationPrefix,
		NetConfigPath:           k.NetConfigPath,
		LeaveNetworkUnavailable: !k.SetNodeNetworkUnavailable,
		Log:                     log,
	})
	if err != nil {
		return nil, err
	}
	hc, err := rest.HTTPClientFor(restCfg)
	if err != nil {
		s.Close()
		return nil, fmt.Errorf("agent: API server client: %w", err)
	}
	return store{Store: s, hc: hc, host: restCfg.Host}, nil
}

// store is a kubestore.Store as the agent's KubeStore.
type store struct {
	*kubestore.Store
	hc   *http.Client
	host string
}

// HoldAndWatch holds this host's lease (waiting for the Node's pod CIDRs)
// and watches the Nodes' leases. The watch's Snapshot comes from the Node
// informer's cache, which Hold has waited for: one list per start, as with
// etcd.
func (s store) HoldAndWatch(ctx context.Context, cfg *lease.Config, opts subnet.AcquireOptions) (agent.Holder, <-chan lease.Batch, error) {
	h, err := s.Hold(ctx, cfg, opts)
	if err != nil {
		return nil, nil, err
	}
	return h, s.WatchLeases(ctx), nil
}

// Ready asks the API server's /readyz.
func (s store) Ready(ctx context.Context) error { return apiServerReady(ctx, s.hc, s.host) }

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
