// Package deploy tests the kustomize overlays in deploy/ (base, default,
// shardselector, local) as a cluster administrator meets them: they build with kubectl's
// kustomize, what they build holds together (the StatefulSet's args, ports,
// probes, Services, certificates, webhook and ring agree with each other and
// with the operator's flags and metrics), and a real kube-apiserver accepts
// every object it knows (server-side dry-run).
package deploy
