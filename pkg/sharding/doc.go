// Package sharding is what an operator author imports to run an operator as a
// ring of replicas: each replica caches and reconciles only the objects of the
// slots it serves. In main, Setup fills in the manager's options from the
// ShardRing, Ring.SetupWithManager makes the replica a member, and
// Ring.Reconciler wraps each reconciler, which itself does not change but for
// Ring.LabelChild on the children it creates. docs/implement-sharding.md is
// the guide; Example is its main.
package sharding
