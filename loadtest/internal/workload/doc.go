// Package workload creates, changes and deletes the load test's LargeData
// objects: deterministic names (so that a second run continues where the
// first stopped), a target rate with bounded concurrency, a client-side
// timestamp on every spec write for measuring time to reconciled, and a bare
// client-go loop to compare the create rate with.
package workload
