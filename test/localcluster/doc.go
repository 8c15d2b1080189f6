// Package localcluster runs a Kubernetes control plane (etcd, kube-apiserver
// and kube-controller-manager) as local processes on loopback ports, without
// Docker or a kubelet, for end-to-end tests of operators that run as
// StatefulSets. Pair it with package podrunner, which plays the kubelet for the
// pods those tests care about.
//
// It starts the binaries itself rather than through envtest: envtest does not
// run kube-controller-manager, its processes survive a test binary that dies
// without cleanup (they get Setpgid but no parent-death signal), and
// restarting its API server regenerates the serving certificates, which breaks
// every client configured before the restart.
package localcluster
