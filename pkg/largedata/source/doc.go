// Package source reads the entries that a LargeData dataset ingests from a
// stream, with the guarantees of a consumer group: an entry is delivered
// until it is acknowledged, and one the consumer that read it never
// acknowledged (it crashed, or its dataset moved to another member) is
// delivered again to the next reader.
//
// The reconciler depends on the Source interface only. Redis is the Redis
// Streams implementation (consumer groups, XREADGROUP, XAUTOCLAIM, XACK);
// Memory keeps streams in the process, for tests and demos. Another system
// with consumer groups and per-entry or per-offset commits (Kafka) fits the
// same interface.
package source
