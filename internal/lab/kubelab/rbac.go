package kubelab

import (
	"bytes"
	"errors"
	"fmt"
	"io"

	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/kubernetes/scheme"

	dist "github.com/netagent/netagent/dist/kubernetes"
)

// AgentRole is the name of the agent's ClusterRole in
// dist/kubernetes/netagent.yaml, and of the role and binding Start makes.
const AgentRole = "netagent"

// AgentRules returns the rules of the ClusterRole AgentRole shipped in
// dist/kubernetes/netagent.yaml.
func AgentRules() ([]rbacv1.PolicyRule, error) {
	dec := yaml.NewYAMLOrJSONDecoder(bytes.NewReader(dist.Manifest), 4096)
	for {
		var raw runtime.RawExtension
		if err := dec.Decode(&raw); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			return nil, fmt.Errorf("kubelab: netagent.yaml: %w", err)
		}
		if len(bytes.TrimSpace(raw.Raw)) == 0 || string(raw.Raw) == "null" {
			continue
		}
		obj, _, err := scheme.Codecs.UniversalDeserializer().Decode(raw.Raw, nil, nil)
		if err != nil {
			return nil, fmt.Errorf("kubelab: netagent.yaml: %w", err)
		}
		if r, ok := obj.(*rbacv1.ClusterRole); ok && r.Name == AgentRole {
			return r.Rules, nil
		}
	}
	return nil, fmt.Errorf("kubelab: netagent.yaml has no ClusterRole %q", AgentRole)
}
