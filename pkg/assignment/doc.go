// Package assignment reads and writes the slot assignment that
// ShardRing.status records: who owns each slot and which slots are moving. The
// coordinator is its only writer; every member reads it to decide which slots
// it may serve.
package assignment
