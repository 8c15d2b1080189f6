// Package serving is the member's side of a ring: it holds the member's Lease,
// follows the assignment in ShardRing.status, and admits a reconcile only for a
// slot the member serves, counting those in flight so that a slot is handed
// over only when none of its reconciles runs.
package serving
