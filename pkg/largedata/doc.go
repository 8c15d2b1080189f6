// Package largedata is the LargeData operator's reconciler: a LargeData
// object is the control record of a dataset whose records live in a Store
// (package store) rather than in etcd. Each reconcile does one bounded step
// in the store (at most one batch of records created and then one processed,
// or one batch deleted), reports progress in the object's status with a merge
// patch, and requeues: reconciles stay short, which a sharded operator's slot
// handover, waiting for in-flight reconciles, relies on. The reconciler knows
// nothing of sharding, except that the summary ConfigMap it creates carries
// its owner's slot label.
//
// Add wires the reconciler into a manager.
package largedata
