// Package postgres is a Store that keeps datasets in PostgreSQL (12 or
// newer; tested with 15), through a pgx connection pool. The records are created, processed
// and deleted in bounded batches, each in one transaction; a batch's rows are
// locked with FOR UPDATE SKIP LOCKED and streamed to the workers that
// transform them, so neither a dataset nor a batch needs to fit in the
// operator's memory beyond the batch's results. Each dataset's progress is a
// row updated in the same transactions, so status never counts records.
// The schema (see Schema) is created on first use.
package postgres
