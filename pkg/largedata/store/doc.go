// Package store is where the records of a LargeData dataset live: outside
// etcd, which holds only the object's spec and a small status. It defines
// the Store interface the reconciler drives, one bounded batch per call, and
// what every implementation shares: the records' deterministic content
// (Payload), the order-independent checksum of a dataset (RecordHash) and the
// bounded worker pool that transforms a batch (TransformRecords). The
// implementations are in the sub-packages memory and postgres; storetest
// holds the conformance tests both pass.
package store
