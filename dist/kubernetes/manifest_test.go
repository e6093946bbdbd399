// The test is outside the package: internal/kubetest, which it uses,
// imports the package (through internal/lab/kubelab).
package kubernetes_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"os"
	"reflect"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	authzv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"

	"github.com/netagent/netagent/internal/await"
	"github.com/netagent/netagent/internal/kubetest"
	"github.com/netagent/netagent/lease"
)

const manifest = "netagent.yaml"

// readObjects decodes every document of the manifest into a typed object.
func readObjects(t *testing.T) []runtime.Object {
	t.Helper()
	data, err := os.ReadFile(manifest)
	if err != nil {
		t.Fatal(err)
	}
	dec := yaml.NewYAMLOrJSONDecoder(bytes.NewReader(data), 4096)
	var objs []runtime.Object
	for {
		var raw runtime.RawExtension
		if err := dec.Decode(&raw); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			t.Fatalf("%s: %v", manifest, err)
		}
		if len(bytes.TrimSpace(raw.Raw)) == 0 || string(raw.Raw) == "null" {
			continue
		}
		obj, _, err := scheme.Codecs.UniversalDeserializer().Decode(raw.Raw, nil, nil)
		if err != nil {
			t.Fatalf("%s: %v", manifest, err)
		}
		objs = append(objs, obj)
	}
	return objs
}

// TestManifest checks the manifest without an API server: the objects it
// holds, the ClusterRole's rules, and the ConfigMap's two files.
func TestManifest(t *testing.T) {
	var kinds []string
	for _, obj := range readObjects(t) {
		kinds = append(kinds, obj.GetObjectKind().GroupVersionKind().Kind)
		switch o := obj.(type) {
		case *rbacv1.ClusterRole:
			if !reflect.DeepEqual(o.Rules, kubetest.AgentRules) {
				t.Errorf("ClusterRole %s rules %+v, want the ones the tests grant the agent: %+v", o.Name, o.Rules, kubetest.AgentRules)
			}
		case *corev1.ConfigMap:
			if _, err := lease.ParseConfig([]byte(o.Data["net-conf.json"])); err != nil {
				t.Errorf("ConfigMap %s: net-conf.json: %v", o.Name, err)
			}
			want, err := os.ReadFile("../10-netagent.conflist")
			if err != nil {
				t.Fatal(err)
			}
			if !jsonEqual(t, []byte(o.Data["cni-conf.json"]), want) {
				t.Errorf("ConfigMap %s: cni-conf.json differs from dist/10-netagent.conflist:\n%s", o.Name, o.Data["cni-conf.json"])
			}
		case *appsv1.DaemonSet:
			spec := o.Spec.Template.Spec
			if !spec.HostNetwork || len(spec.Containers) != 1 || len(spec.InitContainers) != 1 {
				t.Errorf("DaemonSet %s: hostNetwork %v, %d containers, %d init containers; want host network, one of each",
					o.Name, spec.HostNetwork, len(spec.Containers), len(spec.InitContainers))
				break
			}
			c := spec.Containers[0]
			if c.SecurityContext == nil || c.SecurityContext.Privileged == nil || !*c.SecurityContext.Privileged {
				t.Errorf("DaemonSet %s: container %s is not privileged", o.Name, c.Name)
			}
			if c.ReadinessProbe == nil || c.ReadinessProbe.HTTPGet == nil || c.ReadinessProbe.HTTPGet.Path != "/readyz" {
				t.Errorf("DaemonSet %s: readiness probe %+v, want GET /readyz", o.Name, c.ReadinessProbe)
			}
		}
	}
	want := []string{"ServiceAccount", "ClusterRole", "ClusterRoleBinding", "ConfigMap", "DaemonSet"}
	if !reflect.DeepEqual(kinds, want) {
		t.Errorf("manifest holds %v, want %v", kinds, want)
	}
}

func jsonEqual(t *testing.T, a, b []byte) bool {
	t.Helper()
	var x, y any
	if err := json.Unmarshal(a, &x); err != nil {
		t.Fatalf("%v in %s", err, a)
	}
	if err := json.Unmarshal(b, &y); err != nil {
		t.Fatalf("%v in %s", err, b)
	}
	return reflect.DeepEqual(x, y)
}

// TestManifestServerDryRun submits every object of the manifest to a real
// API server with a server-side dry run (validation and admission, nothing
// stored), then creates the RBAC objects for real and asks the server
// whether the ServiceAccount may do what the agent does.
func TestManifestServerDryRun(t *testing.T) {
	objs := readObjects(t)
	c := kubetest.Start(t, kubetest.Options{})
	cs := c.Client(t, kubetest.AdminUser)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	dry := metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}}
	for _, obj := range objs {
		if err := create(ctx, cs, obj, dry); err != nil {
			t.Errorf("server-side dry run of %s: %v", obj.GetObjectKind().GroupVersionKind().Kind, err)
		}
	}
	if t.Failed() {
		return
	}

	for _, obj := range objs {
		switch obj.(type) {
		case *corev1.ServiceAccount, *rbacv1.ClusterRole, *rbacv1.ClusterRoleBinding:
			if err := create(ctx, cs, obj, metav1.CreateOptions{}); err != nil {
				t.Fatalf("create %s: %v", obj.GetObjectKind().GroupVersionKind().Kind, err)
			}
		}
	}
	const sa = "system:serviceaccount:kube-system:netagent"
	allowed := func(verb, resource, sub string) bool {
		r, err := cs.AuthorizationV1().SubjectAccessReviews().Create(ctx, &authzv1.SubjectAccessReview{Spec: authzv1.SubjectAccessReviewSpec{
			User:               sa,
			Groups:             []string{"system:serviceaccounts", "system:serviceaccounts:kube-system", "system:authenticated"},
			ResourceAttributes: &authzv1.ResourceAttributes{Verb: verb, Resource: resource, Subresource: sub, Name: "node-1"},
		}}, metav1.CreateOptions{})
		if err != nil {
			t.Fatalf("SubjectAccessReview: %v", err)
		}
		return r.Status.Allowed
	}
	// The authorizer reads the roles from an informer: the binding takes
	// effect shortly after it is written.
	await.Eventually(t, time.Minute, "ServiceAccount netagent allowed to watch nodes", func() error {
		if !allowed("watch", "nodes", "") {
			return errors.New("not allowed")
		}
		return nil
	})
	for _, a := range []struct {
		verb, resource, sub string
		want                bool
	}{
		{"get", "nodes", "", true},
		{"list", "nodes", "", true},
		{"patch", "nodes", "status", true},
		{"patch", "nodes", "", false},
		{"delete", "nodes", "", false},
		{"list", "pods", "", false},
	} {
		if got := allowed(a.verb, a.resource, a.sub); got != a.want {
			t.Errorf("%s may %s %s/%s: %v, want %v", sa, a.verb, a.resource, a.sub, got, a.want)
		}
	}
}

// create creates obj (one of the manifest's kinds) with opts.
func create(ctx context.Context, cs kubernetes.Interface, obj runtime.Object, opts metav1.CreateOptions) error {
	var err error
	switch o := obj.(type) {
	case *corev1.ServiceAccount:
		_, err = cs.CoreV1().ServiceAccounts(o.Namespace).Create(ctx, o, opts)
	case *rbacv1.ClusterRole:
		_, err = cs.RbacV1().ClusterRoles().Create(ctx, o, opts)
	case *rbacv1.ClusterRoleBinding:
		_, err = cs.RbacV1().ClusterRoleBindings().Create(ctx, o, opts)
	case *corev1.ConfigMap:
		_, err = cs.CoreV1().ConfigMaps(o.Namespace).Create(ctx, o, opts)
	case *appsv1.DaemonSet:
		_, err = cs.AppsV1().DaemonSets(o.Namespace).Create(ctx, o, opts)
	default:
		err = errors.New("unexpected kind in the manifest")
	}
	return err
}
