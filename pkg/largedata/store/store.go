package store

import (
	"context"
	"errors"
	"fmt"
)

// Errors a Store returns, wrapped; test them with errors.Is.
var (
	// ErrNotFound: the store holds no dataset under the key.
	ErrNotFound = errors.New("dataset not found in the store")
	// ErrStaleGeneration: the call names a generation other than the one the
	// store is at. The caller read an outdated object (a newer generation was
	// already initialized) or skipped Initialize; it should read the object
	// again and retry.
	ErrStaleGeneration = errors.New("dataset generation differs from the store's")
	// ErrUnavailable: the store cannot be reached. The memory store returns it
	// while its fault injection is on; the postgres store returns the
	// driver's errors instead.
	ErrUnavailable = errors.New("store unavailable")
)

// Store keeps the records of many datasets. Every method does a bounded
// amount of work, so that a reconcile that calls one stays short, and is
// safe for concurrent use. Implementations pass the tests of package
// storetest.
type Store interface {
	// Initialize moves the dataset towards target by at most limit records:
	// it creates the records [0, target.Items) that are missing, rewrites
	// those made with another seed, and deletes those at or beyond
	// target.Items. It creates the dataset when the store has none.
	//
	// A target.Generation above the store's starts a new generation: its
	// progress (Processed, Failed, Checksum) starts at zero, and every record
	// counts as unprocessed until ProcessBatch processes it for the new
	// generation. A target.Generation below the store's fails with
	// ErrStaleGeneration. Calls for the store's generation continue its
	// initialization, and are cheap once it is initialized (Progress's
	// Initialized is true); they expect the target of the call that started
	// the generation.
	//
	// Initialize is idempotent: a call that fails or whose result is lost can
	// be repeated.
	Initialize(ctx context.Context, key Key, target Target, limit int) (Progress, error)

	// ProcessBatch processes at most batch.Limit records that are not yet
	// processed for batch.Generation: it passes their payloads through
	// batch.Transform on batch.Workers goroutines and stores the results
	// with the generation, in one transaction. No record is processed twice
	// for one generation, even by concurrent calls. It processes nothing
	// until the generation is initialized, fails with ErrStaleGeneration
	// when batch.Generation is not the store's, and with ErrNotFound when
	// the dataset does not exist.
	ProcessBatch(ctx context.Context, key Key, batch Batch) (BatchResult, error)

	// Progress returns the dataset's progress, or ErrNotFound.
	Progress(ctx context.Context, key Key) (Progress, error)

	// Records returns at most limit records with index from or above, in
	// index order: a page of the dataset, for inspection and tests. A
	// dataset the store does not hold has none.
	Records(ctx context.Context, key Key, from int64, limit int) ([]Record, error)

	// Ingest stores entries read from the dataset's stream, each once: an
	// entry whose ID the dataset already holds is skipped, so a batch read
	// again after a crash, or by the next owner of the dataset, stores
	// nothing twice. The entries and the dataset's stream progress change in
	// one transaction; the caller acknowledges the entries to the stream
	// only after Ingest returned. Pass entries in stream order. It fails
	// with ErrNotFound when the dataset does not exist (Initialize creates
	// it).
	Ingest(ctx context.Context, key Key, entries []Entry) (IngestResult, error)

	// Entries returns at most limit of the dataset's stream entries, from
	// the from-th stored (0-based) on, in the order they were stored: a page
	// of what the dataset ingested, for inspection and tests.
	Entries(ctx context.Context, key Key, from int64, limit int) ([]Entry, error)

	// Delete deletes at most limit records or stream entries of the dataset,
	// and the dataset itself with the last of them. It reports done when
	// nothing of the dataset is left, which is at once for a dataset the
	// store does not hold.
	Delete(ctx context.Context, key Key, limit int) (done bool, err error)
}

// Key names a dataset. The UID of the LargeData object is its identity, so
// that an object deleted and created again under the same name starts
// afresh; namespace and name are kept for the humans who look at the store.
type Key struct {
	UID       string
	Namespace string
	Name      string
}

func (k Key) String() string { return fmt.Sprintf("%s/%s (uid %s)", k.Namespace, k.Name, k.UID) }

// Target is what a generation of a dataset should hold.
type Target struct {
	// Generation is the LargeData object's metadata.generation.
	Generation int64
	// Seed determines the records' payloads (see Payload).
	Seed int64
	// Items is the number of records, indexed 0 to Items-1.
	Items int64
}

// Progress is a dataset's state in the store: the store keeps it up to date
// in the same transaction as the records, so reading it never counts them.
type Progress struct {
	// Generation, Seed and Items are the current target.
	Generation int64
	Seed       int64
	Items      int64
	// Initialized: the records are exactly those of the target.
	Initialized bool
	// Created is how many records of the target, from index 0 up, exist
	// with the target's seed.
	Created int64
	// Processed and Failed count the records processed for Generation, with
	// a result or with a failed transformation.
	Processed int64
	Failed    int64
	// Checksum is the XOR of RecordHash over the records processed for
	// Generation with a result: once every record is processed, a checksum
	// of the whole dataset that does not depend on the processing order.
	Checksum uint64
	// Stream is what the dataset ingested from its stream; a new generation
	// keeps it.
	Stream StreamProgress
}

// Entry is one entry of a dataset's stream, as the store keeps it.
type Entry struct {
	// ID is the entry's ID in its stream; the dataset holds each ID once.
	ID string
	// Payload is the entry's content; empty for a malformed entry.
	Payload string
	// Malformed: the entry could not be read as a record. It is kept
	// without payload, so that it is counted once and never retried.
	Malformed bool
}

// StreamProgress is what a dataset ingested from its stream.
type StreamProgress struct {
	// Ingested counts the entries stored with a payload, Malformed those
	// stored as malformed.
	Ingested  int64
	Malformed int64
	// LastEntryID is the ID of the last entry of the latest Ingest that
	// stored at least one: with entries passed in stream order, the newest
	// entry the dataset holds.
	LastEntryID string
}

// IngestResult is what one Ingest did.
type IngestResult struct {
	// Stored counts the entries new to the dataset (Malformed of them
	// malformed); Duplicates those it already held.
	Stored     int
	Malformed  int
	Duplicates int
	// Stream is the dataset's stream progress after the call.
	Stream StreamProgress
}

// Pending is the number of records not yet processed for the generation.
func (p Progress) Pending() int64 { return p.Items - p.Processed - p.Failed }

// Done reports whether every record is processed for the generation.
func (p Progress) Done() bool { return p.Initialized && p.Pending() == 0 }

// Transform computes the result of one record from its payload. An error
// marks the record failed for the generation; it is not retried before the
// next generation. A Transform must be safe for concurrent use.
type Transform func(payload string) (string, error)

// Batch says what ProcessBatch processes.
type Batch struct {
	// Generation is the generation the records are processed for.
	Generation int64
	// Limit is the most records to process.
	Limit int
	// Workers is how many goroutines run Transform at once; below 1 means 1.
	Workers int
	// Transform computes each record's result.
	Transform Transform
}

// BatchResult is what one ProcessBatch did.
type BatchResult struct {
	// Processed and Failed are the records processed by this call.
	Processed int
	Failed    int
	// Progress is the dataset's progress after the call.
	Progress Progress
}

// Record is one record of a dataset.
type Record struct {
	Index int64
	// Payload is Payload(seed, Index).
	Payload string
	// Result is the transformed payload; empty while unprocessed or failed.
	Result string
	// Generation is the generation the record was last processed for; 0 for
	// a record never processed (or rewritten since).
	Generation int64
	// Failed: the transformation failed for Generation.
	Failed bool
}
