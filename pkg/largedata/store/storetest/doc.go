// Package storetest holds the conformance tests of a store.Store: the
// batching, idempotency and exactly-once processing every implementation
// must provide. The memory store runs them in its unit tests, the postgres
// store in the integration tests, against a real database.
package storetest
