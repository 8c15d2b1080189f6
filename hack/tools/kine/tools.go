//go:build tools

// Package tools pins kine, the etcd API over SQL databases (k3s' storage
// layer), which hack/k8s-bins.sh builds into bin/k8s/kine when KINE=1: the
// local cluster can then run kube-apiserver on PostgreSQL instead of etcd.
package tools

import _ "github.com/k3s-io/kine"
