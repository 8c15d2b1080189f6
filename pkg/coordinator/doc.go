// Package coordinator assigns slots to the live members of a ring. It runs on
// one member at a time (leader election), judges liveness from the member
// Leases, which every member watches so that a newly elected coordinator
// starts with a history of its own, computes the sticky assignment with
// pkg/ring and drives each handover in two phases through ShardRing.status,
// so that no slot is ever served by two members and no slot stays without a
// live owner longer than it must.
package coordinator
