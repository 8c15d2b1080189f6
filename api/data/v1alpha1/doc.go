// Package v1alpha1 holds the data.kubeshard.dev API: LargeData, the control
// record of a dataset whose items live in an external store (PostgreSQL).
// etcd holds only the spec and a small status, never the items.
//
// +kubebuilder:object:generate=true
// +groupName=data.kubeshard.dev
package v1alpha1
