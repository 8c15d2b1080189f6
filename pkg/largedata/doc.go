// Package largedata is the LargeData operator's reconciler: a LargeData
// object is the control record of a dataset whose records live in a Store
// (package store) rather than in etcd. Each reconcile does one bounded step,
// creating and then processing, or deleting, at most one batch of records of
// each kind in the store, reports
// progress in the object's status with a merge patch, and requeues: reconciles
// stay short, which a sharded operator's slot handover, waiting for in-flight
// reconciles, relies on. The reconciler knows nothing of sharding, except that
// the summary ConfigMap it creates carries its owner's slot label.
//
// Add wires the reconciler into a manager.
package largedata
