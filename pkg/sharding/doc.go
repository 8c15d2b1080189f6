// Package sharding is what an operator author imports to run an operator as a
// ring of replicas: each replica caches and reconciles only the objects of the
// slots it serves. A few lines in main set it up (NewCache in the manager's
// options, New for the ring, Reconciler around the reconciler); the reconciler
// itself does not change.
package sharding
