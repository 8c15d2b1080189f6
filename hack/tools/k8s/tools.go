//go:build tools

// Package tools pins the Kubernetes control-plane commands that the tests and
// the local cluster run. It is its own module so that k8s.io/kubernetes and
// its dependencies never enter the project's go.mod.
package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kubectl"
)
