// Package testenv starts a real kube-apiserver and etcd (envtest) with the
// project's CRDs installed, for integration tests. The binaries come from
// bin/k8s, built by `make k8s-bins`; KUBEBUILDER_ASSETS overrides the folder.
package testenv
