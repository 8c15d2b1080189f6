// Package memory is a Store that keeps datasets in the operator's memory:
// for demos and load tests that need no database. Its datasets are lost when
// the process ends, and every replica of a sharded operator has its own, so
// an object that moves to another replica starts its dataset again there.
// SetUnavailable simulates an outage.
package memory
