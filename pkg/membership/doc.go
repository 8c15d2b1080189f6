// Package membership keeps one coordination.k8s.io Lease per member of a sharded
// operator. A Member renews its own Lease, publishes the slots it serves in it and
// fences itself when it cannot renew in time; a Tracker lets the coordinator judge
// which members are live by its own clock, as client-go leader election does.
package membership
