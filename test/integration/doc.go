// Package integration holds tests that run against a real kube-apiserver and
// etcd (envtest): the CRDs, their defaults and their validation as a user of
// kubectl meets them.
package integration
