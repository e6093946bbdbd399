package kubestore

import (
	"context"
	"fmt"

	authzv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
)

// The Store speaks to the API server through client-go's REST client on
// a scheme of its own holding only the kinds it reads and writes, not
// through the typed clientset: that one imports client-go's scheme of
// every API group, whose registration costs the agent ~100 ms of start
// and more than doubles its binary.
var (
	scheme     = newScheme()
	codecs     = serializer.NewCodecFactory(scheme)
	paramCodec = runtime.NewParameterCodec(scheme)
)

// newScheme registers Node and NodeList (core/v1),
// SelfSubjectAccessReview (authorization.k8s.io/v1), and in both groups
// the list, watch and patch options and watch events of metav1.
func newScheme() *runtime.Scheme {
	s := runtime.NewScheme()
	s.AddKnownTypes(corev1.SchemeGroupVersion, &corev1.Node{}, &corev1.NodeList{})
	metav1.AddToGroupVersion(s, corev1.SchemeGroupVersion)
	s.AddKnownTypes(authzv1.SchemeGroupVersion, &authzv1.SelfSubjectAccessReview{})
	metav1.AddToGroupVersion(s, authzv1.SchemeGroupVersion)
	return s
}

// restClient returns a client of the API group gv under apiPath ("/api"
// for the core group, "/apis" for the others) with restCfg's server,
// credentials and limits.
func restClient(restCfg *rest.Config, apiPath string, gv schema.GroupVersion) (*rest.RESTClient, error) {
	cfg := rest.CopyConfig(restCfg)
	cfg.APIPath = apiPath
	cfg.GroupVersion = &gv
	cfg.NegotiatedSerializer = codecs.WithoutConversion()
	// Protobuf, as Kubernetes' own components speak: a list of 1,000
	// Nodes decodes in less than half the time of JSON (bench/README.md).
	// Patches keep their own content type.
	cfg.ContentType = runtime.ContentTypeProtobuf
	cfg.AcceptContentTypes = runtime.ContentTypeProtobuf + "," + runtime.ContentTypeJSON
	if cfg.UserAgent == "" {
		cfg.UserAgent = rest.DefaultKubernetesUserAgent()
	}
	c, err := rest.RESTClientFor(cfg)
	if err != nil {
		return nil, fmt.Errorf("kubestore: client of %s: %w", gv, err)
	}
	return c, nil
}

// nodeClient reads, watches and patches Nodes.
type nodeClient struct{ rc *rest.RESTClient }

// listWatch is what the Node informer lists and watches: every Node.
func (c nodeClient) listWatch() *cache.ListWatch {
	return &cache.ListWatch{
		ListWithContextFunc: func(ctx context.Context, opts metav1.ListOptions) (runtime.Object, error) {
			list := &corev1.NodeList{}
			err := c.rc.Get().Resource("nodes").VersionedParams(&opts, paramCodec).Do(ctx).Into(list)
			return list, err
		},
		WatchFuncWithContext: func(ctx context.Context, opts metav1.ListOptions) (watch.Interface, error) {
			opts.Watch = true
			return c.rc.Get().Resource("nodes").VersionedParams(&opts, paramCodec).Watch(ctx)
		},
	}
}

// patchStatus patches the Node name through its status subresource.
func (c nodeClient) patchStatus(ctx context.Context, name string, pt types.PatchType, body []byte) (*corev1.Node, error) {
	n := &corev1.Node{}
	err := c.rc.Patch(pt).Resource("nodes").Name(name).SubResource("status").
		VersionedParams(&metav1.PatchOptions{}, paramCodec).Body(body).Do(ctx).Into(n)
	return n, err
}

// accessReviewer asks the API server what this identity may do.
type accessReviewer struct{ rc *rest.RESTClient }

// review creates a SelfSubjectAccessReview and returns the server's
// answer.
func (c accessReviewer) review(ctx context.Context, r *authzv1.SelfSubjectAccessReview) (*authzv1.SelfSubjectAccessReview, error) {
	out := &authzv1.SelfSubjectAccessReview{}
	err := c.rc.Post().Resource("selfsubjectaccessreviews").
		VersionedParams(&metav1.CreateOptions{}, paramCodec).Body(r).Do(ctx).Into(out)
	return out, err
}
