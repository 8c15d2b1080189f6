// Package v1alpha1 holds the sharding.kubeshard.dev API: the ShardRing, which
// describes one sharded operator (its slots, its sharded resources and how
// members are judged alive) and records in its status which member serves
// which slot. The label and annotation keys that kubeshard writes are
// documented constants here so that users and tools can rely on them.
//
// +kubebuilder:object:generate=true
// +groupName=sharding.kubeshard.dev
package v1alpha1
