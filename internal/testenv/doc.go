// Package testenv starts a real kube-apiserver and etcd (envtest) with the
// project's CRDs installed, for integration tests. The binaries come from
// bin/k8s, built by `make k8s-bins`; KUBEBUILDER_ASSETS overrides the folder.
//
// It also holds what every layer of tests shares: Run for an envtest
// package's TestMain, Eventually to wait for a condition, and MetricValue
// to read an exported metric.
package testenv
