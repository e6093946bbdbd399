// Package kubernetes holds the manifests that deploy netagent on a
// Kubernetes cluster; its test checks them against a real API server.
package kubernetes

import _ "embed"

// Manifest is netagent.yaml, for programs that install or check what it
// ships (the lab binds its ClusterRole's rules to the agents it runs).
//
//go:embed netagent.yaml
var Manifest []byte
