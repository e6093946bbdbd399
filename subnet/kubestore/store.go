package kubestore

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync/atomic"
	"time"

	"github.com/netagent/netagent/subnet/kubestore/kubeinfo"

	authzv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/netagent/netagent/lease"
	"github.com/netagent/netagent/subnet"
	"github.com/netagent/netagent/subnet/kubestore/internal/nodeann"
)

// DefaultAnnotationPrefix is flannel's --kube-annotation-prefix default.
const DefaultAnnotationPrefix = nodeann.DefaultPrefix

// ErrInvalidPrefix is wrapped by the error of an annotation prefix that
// cannot form annotation names.
var ErrInvalidPrefix = nodeann.ErrInvalidPrefix

// CheckAnnotationPrefix returns an error wrapping ErrInvalidPrefix when
// prefix does not form annotation names the API server accepts, derived as
// flannel derives them (Open checks the same).
func CheckAnnotationPrefix(prefix string) error {
	_, err := nodeann.New(prefix)
	return err
}

// DefaultNetConfigPath is flannel's --net-config-path default.
const DefaultNetConfigPath = kubeinfo.DefaultNetConfigPath

// ErrForbidden is wrapped by the error of a request the API server
// refused for lack of RBAC permission; the error names the verb and the
// resource.
var ErrForbidden = errors.New("kubestore: forbidden by RBAC")

// ErrNoNodeName is returned by Open without Options.NodeName.
var ErrNoNodeName = errors.New("kubestore: no node name (NODE_NAME)")

// requestTimeout bounds each request the Store makes itself.
const requestTimeout = 30 * time.Second

// Options configure a Store.
type Options struct {
	// NodeName is this host's Node (flanneld's NODE_NAME); required.
	NodeName string
	// AnnotationPrefix names the annotations (DefaultAnnotationPrefix
	// when empty).
	AnnotationPrefix string
	// NetConfigPath is the network config file (DefaultNetConfigPath
	// when empty).
	NetConfigPath string
	// LeaveNetworkUnavailable keeps the Holder from setting the Node's
	// NetworkUnavailable condition false (flanneld's
	// --set-node-network-unavailable=false).
	LeaveNetworkUnavailable bool
	// ResyncPeriod makes the Node informer re-deliver its cache this
	// often (0: never); the Store ignores re-deliveries that change
	// nothing.
	ResyncPeriod time.Duration
	// Log receives the Store's messages; nil discards.
	Log *slog.Logger
}

// Store is the cluster store on the Kubernetes API. It is safe for
// concurrent use.
type Store struct {
	nodes     nodeClient
	names     nodeann.Names
	apiServer string
	prefix    string
	nodeName  string
	cfgPath   string
	// leaveCondition is Options.LeaveNetworkUnavailable.
	leaveCondition bool
	cfg            *lease.Config
	log            *slog.Logger
	informer       cache.SharedIndexInformer
	cancel         context.CancelFunc
	done           chan struct{}
	stats          storeStats
}

type storeStats struct {
	events, patches, patchFailures, losses, restores, watchErrors atomic.Uint64
	// lastEvent is when the informer last delivered a Node (Unix
	// nanoseconds; 0 before the first).
	lastEvent atomic.Int64
}

// NewRESTConfig returns the API server's client configuration as flanneld
// builds it: from apiURL (--kube-api-url) and kubeconfig
// (--kubeconfig-file) when given, else the in-cluster service account.
func NewRESTConfig(apiURL, kubeconfig string) (*rest.Config, error) {
	cfg, err := clientcmd.BuildConfigFromFlags(apiURL, kubeconfig)
	if err != nil {
		return nil, fmt.Errorf("kubestore: API server configuration: %w", err)
	}
	return cfg, nil
}

// Open reads and checks the network config file, checks that the
// identity of restCfg may do what the Store does (an error wrapping
// ErrForbidden names the first verb and resource it may not), and starts
// the Node informer, which runs until Close.
func Open(ctx context.Context, restCfg *rest.Config, opts Options) (*Store, error) {
	if opts.NodeName == "" {
		return nil, ErrNoNodeName
	}
	if opts.AnnotationPrefix == "" {
		opts.AnnotationPrefix = DefaultAnnotationPrefix
	}
	if opts.NetConfigPath == "" {
		opts.NetConfigPath = DefaultNetConfigPath
	}
	if opts.Log == nil {
		opts.Log = slog.New(slog.DiscardHandler)
	}
	names, err := nodeann.New(opts.AnnotationPrefix)
	if err != nil {
		return nil, err
	}
	cfg, err := readConfig(opts.NetConfigPath)
	if err != nil {
		return nil, err
	}
	core, err := restClient(restCfg, "/api", corev1.SchemeGroupVersion)
	if err != nil {
		return nil, err
	}
	authz, err := restClient(restCfg, "/apis", authzv1.SchemeGroupVersion)
	if err != nil {
		return nil, err
	}
	if err := checkAccess(ctx, accessReviewer{authz}, opts.NodeName); err != nil {
		return nil, err
	}
	s := &Store{
		nodes:          nodeClient{core},
		names:          names,
		apiServer:      serverURL(restCfg.Host),
		prefix:         opts.AnnotationPrefix,
		nodeName:       opts.NodeName,
		leaveCondition: opts.LeaveNetworkUnavailable,
		cfgPath:        opts.NetConfigPath,
		cfg:            cfg,
		log:            opts.Log,
		done:           make(chan struct{}),
	}
	s.informer = cache.NewSharedIndexInformer(s.nodes.listWatch(), &corev1.Node{}, opts.ResyncPeriod, cache.Indexers{})
	if err := s.informer.SetWatchErrorHandler(s.watchError); err != nil {
		return nil, fmt.Errorf("kubestore: %w", err)
	}
	if _, err := s.informer.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(any) { s.event() },
		UpdateFunc: func(_, _ any) { s.event() },
		DeleteFunc: func(any) { s.event() },
	}); err != nil {
		return nil, fmt.Errorf("kubestore: %w", err)
	}
	ictx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	s.cancel = cancel
	go func() {
		defer close(s.done)
		s.informer.RunWithContext(ictx)
	}()
	return s, nil
}

// Close stops the Node informer and waits for it. Watches and Holders of
// the Store stop delivering.
func (s *Store) Close() error {
	s.cancel()
	<-s.done
	return nil
}

// watchError is called by the informer when its list or watch of Nodes
// fails (it then retries with backoff).
func (s *Store) watchError(_ *cache.Reflector, err error) {
	s.stats.watchErrors.Add(1)
	if apierrors.IsForbidden(err) {
		s.log.Error("the API server refuses to list or watch nodes: check the ClusterRole", "err", err)
		return
	}
	s.log.Info("node watch broke: listing again", "err", err)
}

// access is one permission the Store needs.
type access struct{ verb, resource, subresource, name string }

func (a access) String() string {
	r := a.resource
	if a.subresource != "" {
		r += "/" + a.subresource
	}
	if a.name != "" {
		r += " " + a.name
	}
	return a.verb + " " + r
}

// checkAccess asks the API server (SelfSubjectAccessReview, which every
// authenticated identity may create) whether this identity may do what
// the Store does: read and watch Nodes, patch its Node's status.
func checkAccess(ctx context.Context, ssar accessReviewer, node string) error {
	for _, a := range []access{
		{verb: "get", resource: "nodes"},
		{verb: "list", resource: "nodes"},
		{verb: "watch", resource: "nodes"},
		{verb: "patch", resource: "nodes", subresource: "status", name: node},
	} {
		rctx, cancel := context.WithTimeout(ctx, requestTimeout)
		review, err := ssar.review(rctx, &authzv1.SelfSubjectAccessReview{Spec: authzv1.SelfSubjectAccessReviewSpec{
			ResourceAttributes: &authzv1.ResourceAttributes{Verb: a.verb, Resource: a.resource, Subresource: a.subresource, Name: a.name},
		}})
		cancel()
		if err != nil {
			return fmt.Errorf("kubestore: ask the API server whether this identity may %s: %w", a, err)
		}
		if !review.Status.Allowed {
			why := review.Status.Reason
			if why == "" {
				why = "no RBAC rule allows it"
			}
			return fmt.Errorf("%w: this identity may not %s (%s)", ErrForbidden, a, why)
		}
	}
	return nil
}

// forbidden wraps the error of a request the API server refused for lack
// of permission in ErrForbidden, naming the verb and resource.
func forbidden(err error, a access) error {
	if apierrors.IsForbidden(err) {
		return fmt.Errorf("%w: %s: %v", ErrForbidden, a, err)
	}
	return fmt.Errorf("kubestore: %s: %w", a, err)
}

// readConfig reads and parses the network config file.
func readConfig(path string) (*lease.Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("kubestore: network config: %w", err)
	}
	cfg, err := lease.ParseConfig(data)
	if err != nil {
		return nil, fmt.Errorf("kubestore: %s: %w", path, err)
	}
	return cfg, nil
}

// ConfigKey names where the network config comes from: its file.
func (s *Store) ConfigKey() string { return s.cfgPath }

// Config returns the network config read by Open.
func (s *Store) Config() *lease.Config { return s.cfg }

// WaitConfig returns the network config read by Open (as flanneld, the
// Store reads the file once: a changed ConfigMap takes a restart).
func (s *Store) WaitConfig(ctx context.Context) (*lease.Config, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	return s.cfg, nil
}

// WatchConfig delivers the network config read by Open, then nothing
// until ctx is done, when the channel is closed.
func (s *Store) WatchConfig(ctx context.Context) <-chan subnet.ConfigUpdate {
	out := make(chan subnet.ConfigUpdate, 1)
	out <- subnet.ConfigUpdate{Config: s.cfg}
	go func() {
		<-ctx.Done()
		close(out)
	}()
	return out
}

// Stats returns the Store's counters in the etcd Registry's terms:
// Renewals are annotation patches, LeaseLosses this Node's disappearances,
// LeaseRestores patches that put back annotations someone removed or
// changed, WatchRestarts failed lists and watches of Nodes.
func (s *Store) Stats() subnet.Stats {
	return subnet.Stats{
		Renewals:        s.stats.patches.Load(),
		RenewalFailures: s.stats.patchFailures.Load(),
		LeaseLosses:     s.stats.losses.Load(),
		LeaseRestores:   s.stats.restores.Load(),
		WatchRestarts:   s.stats.watchErrors.Load(),
	}
}

// HasSynced reports whether the Node informer has listed the Nodes once.
func (s *Store) HasSynced() bool { return s.informer.HasSynced() }

// waitSynced waits until the informer has listed the Nodes once, or ctx
// is done.
func (s *Store) waitSynced(ctx context.Context, synced func() bool) error {
	if !cache.WaitForCacheSync(ctx.Done(), synced) {
		if err := ctx.Err(); err != nil {
			return err
		}
		return errors.New("kubestore: node informer stopped")
	}
	return nil
}

// node returns this host's Node from the informer's cache, or nil.
func (s *Store) node(name string) *corev1.Node {
	obj, ok, err := s.informer.GetStore().GetByKey(name)
	if err != nil || !ok {
		return nil
	}
	n, _ := obj.(*corev1.Node)
	return n
}
