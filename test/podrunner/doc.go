// Package podrunner plays the kubelet for end-to-end tests on a control plane
// without nodes (package localcluster): it binds the pods that match a
// selector to a fake node, runs each as a local process of a test binary,
// reports their status (Running, Ready from an HTTP readiness check, restarts)
// through the pods' status subresource, restarts processes that exit and
// terminates them gracefully when their pods are deleted, so that
// StatefulSets scale, roll and heal as on a real cluster.
package podrunner
