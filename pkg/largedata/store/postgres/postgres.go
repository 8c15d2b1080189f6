package postgres

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/kubeshard/kubeshard/pkg/largedata/store"
)

// Schema is the SQL that creates the store's tables, run on first use.
//
// A dataset is a row of largedata_datasets, which also holds its progress:
// the counters are updated in the same transaction as the records, so
// reading progress is one row. A record is a row of largedata_records, keyed
// by the dataset's numeric id rather than its 36-byte UID, which would be
// repeated in every row and both indexes. records.generation is the
// generation a record was processed for (0: never); the pending index serves
// the batches' "generation below the current one" in index order without
// walking past the records already processed. A stream entry is a row of
// largedata_entries, keyed by its stream ID so that an entry read twice is
// stored once; seq keeps the order they were stored in. The stream columns
// of largedata_datasets are added to tables of earlier versions.
const Schema = `
CREATE TABLE IF NOT EXISTS largedata_datasets (
	id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
	uid         text NOT NULL UNIQUE,
	namespace   text NOT NULL,
	name        text NOT NULL,
	generation  bigint NOT NULL,
	seed        bigint NOT NULL,
	items       bigint NOT NULL,
	created     bigint NOT NULL DEFAULT 0,
	extent      bigint NOT NULL DEFAULT 0,
	initialized boolean NOT NULL DEFAULT false,
	processed   bigint NOT NULL DEFAULT 0,
	failed      bigint NOT NULL DEFAULT 0,
	checksum    bigint NOT NULL DEFAULT 0,
	updated_at  timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS largedata_records (
	dataset      bigint NOT NULL,
	idx          bigint NOT NULL,
	seed         bigint NOT NULL,
	payload      text NOT NULL,
	result       text,
	generation   bigint NOT NULL DEFAULT 0,
	failed       boolean NOT NULL DEFAULT false,
	processed_at timestamptz,
	PRIMARY KEY (dataset, idx)
);
CREATE INDEX IF NOT EXISTS largedata_records_pending ON largedata_records (dataset, generation, idx);
ALTER TABLE largedata_datasets ADD COLUMN IF NOT EXISTS ingested bigint NOT NULL DEFAULT 0;
ALTER TABLE largedata_datasets ADD COLUMN IF NOT EXISTS malformed bigint NOT NULL DEFAULT 0;
ALTER TABLE largedata_datasets ADD COLUMN IF NOT EXISTS last_entry_id text NOT NULL DEFAULT '';
CREATE TABLE IF NOT EXISTS largedata_entries (
	dataset   bigint NOT NULL,
	id        text NOT NULL,
	seq       bigint GENERATED ALWAYS AS IDENTITY,
	payload   text NOT NULL,
	malformed boolean NOT NULL DEFAULT false,
	stored_at timestamptz NOT NULL DEFAULT now(),
	PRIMARY KEY (dataset, id)
);
CREATE INDEX IF NOT EXISTS largedata_entries_order ON largedata_entries (dataset, seq);
`

// schemaNewest is the object that Schema creates last. Schema runs in one
// transaction, so once it exists the schema is current, and a member that
// starts need not run the DDL at all: ALTER TABLE and CREATE INDEX lock
// their tables even when there is nothing to do, and would wait for (or
// deadlock with) the transactions of members already running. A change of
// Schema must end with a new object and name it here.
const schemaNewest = "largedata_entries_order"

// schemaLock is the key of the advisory lock that serialises the creation of
// the schema: CREATE TABLE IF NOT EXISTS run by two replicas at once can
// fail on a unique constraint of the catalog.
const schemaLock = 0x6c61726765 // "large"

const (
	insertDataset = `
INSERT INTO largedata_datasets (uid, namespace, name, generation, seed, items)
VALUES ($1, $2, $3, $4, $5, $6)
ON CONFLICT (uid) DO NOTHING`

	selectDataset = `
SELECT id, generation, seed, items, created, extent, initialized, processed, failed, checksum,
       ingested, malformed, last_entry_id
FROM largedata_datasets WHERE uid = $1`

	updateDataset = `
UPDATE largedata_datasets
SET generation = $2, seed = $3, items = $4, created = $5, extent = $6, initialized = $7,
    processed = $8, failed = $9, checksum = $10, updated_at = now()
WHERE id = $1`

	// upsertRecords creates the records [$3, $4) and rewrites those of
	// another seed; records of the right seed keep their results.
	upsertRecords = `
INSERT INTO largedata_records (dataset, idx, seed, payload)
SELECT $1, i, $2, left(md5($2::bigint::text || ':' || i::text), 16)
FROM generate_series($3::bigint, $4::bigint - 1) AS i
ON CONFLICT (dataset, idx) DO UPDATE
SET seed = EXCLUDED.seed, payload = EXCLUDED.payload, result = NULL, generation = 0, failed = false, processed_at = NULL
WHERE largedata_records.seed <> EXCLUDED.seed`

	deleteRecordsFrom = `
DELETE FROM largedata_records WHERE dataset = $1 AND idx IN (
	SELECT idx FROM largedata_records WHERE dataset = $1 AND idx >= $2 ORDER BY idx DESC LIMIT $3)`

	selectPending = `
SELECT idx, payload FROM largedata_records
WHERE dataset = $1 AND generation < $2
ORDER BY generation, idx
LIMIT $3
FOR UPDATE SKIP LOCKED`

	updateResults = `
UPDATE largedata_records AS r
SET result = u.result, failed = u.failed, generation = $2, processed_at = now()
FROM unnest($3::bigint[], $4::text[], $5::boolean[]) AS u(idx, result, failed)
WHERE r.dataset = $1 AND r.idx = u.idx`

	// addProgress takes the row's FOR NO KEY UPDATE lock, which the FOR KEY
	// SHARE lock of concurrent batches does not block: concurrent batches
	// of one dataset serialise here, never deadlock.
	addProgress = `
UPDATE largedata_datasets
SET processed = processed + $2, failed = failed + $3, checksum = checksum # $4, updated_at = now()
WHERE id = $1
RETURNING generation, seed, items, created, extent, initialized, processed, failed, checksum,
          ingested, malformed, last_entry_id`

	// insertEntries stores the entries the dataset does not hold yet, in
	// the order given, and returns one row per entry stored.
	insertEntries = `
INSERT INTO largedata_entries (dataset, id, payload, malformed)
SELECT $1, u.id, u.payload, u.malformed
FROM unnest($2::text[], $3::text[], $4::boolean[]) WITH ORDINALITY AS u(id, payload, malformed, ord)
ORDER BY u.ord
ON CONFLICT (dataset, id) DO NOTHING
RETURNING malformed`

	addStream = `
UPDATE largedata_datasets
SET ingested = ingested + $2, malformed = malformed + $3, last_entry_id = $4, updated_at = now()
WHERE id = $1
RETURNING ingested, malformed, last_entry_id`

	selectEntries = `
SELECT id, payload, malformed FROM largedata_entries
WHERE dataset = $1 ORDER BY seq OFFSET $2 LIMIT $3`

	deleteEntries = `
DELETE FROM largedata_entries WHERE dataset = $1 AND seq IN (
	SELECT seq FROM largedata_entries WHERE dataset = $1 ORDER BY seq DESC LIMIT $2)`

	selectRecords = `
SELECT idx, payload, coalesce(result, ''), generation, failed FROM largedata_records
WHERE dataset = $1 AND idx >= $2 ORDER BY idx LIMIT $3`
)

// Store is a store.Store in PostgreSQL.
type Store struct {
	pool     *pgxpool.Pool
	ownsPool bool

	schemaMu sync.Mutex
	schemaOK bool
}

var _ store.Store = (*Store)(nil)

// IdleInTransactionTimeout is the default of PostgreSQL's
// idle_in_transaction_session_timeout on the store's connections. A member
// frozen in the middle of a transaction (SIGSTOP, a long pause of the node)
// holds its dataset's row lock, and the next owner of the slot would wait
// for it until the frozen member runs again; with the timeout the server
// ends that session and frees its locks. It is shorter than a ring's lease
// (15 s by default), so the locks are gone by the time the next owner takes
// the slot over. A healthy member never waits this long between two
// statements of one transaction; if it ever did, the transaction fails and
// is retried like any other error.
const IdleInTransactionTimeout = "5s"

// PoolConfig parses connString (a URL such as
// postgres://user:password@host:5432/db?sslmode=disable, or key=value pairs;
// pool settings such as pool_max_conns go in it too) into a pool
// configuration with the store's defaults: idle_in_transaction_session_timeout
// IdleInTransactionTimeout unless connString sets it. Use it to build the
// pool given to NewFromPool.
func PoolConfig(connString string) (*pgxpool.Config, error) {
	cfg, err := pgxpool.ParseConfig(connString)
	if err != nil {
		return nil, fmt.Errorf("parsing the PostgreSQL connection string: %w", err)
	}
	params := cfg.ConnConfig.RuntimeParams
	if _, set := params["idle_in_transaction_session_timeout"]; !set {
		params["idle_in_transaction_session_timeout"] = IdleInTransactionTimeout
	}
	return cfg, nil
}

// New returns a store in the database that connString names (see
// PoolConfig). It does not connect: the pool connects on first use, and the
// schema is created then, so an operator starts while its database is down
// and reports the outage on its objects. Close releases the pool.
func New(ctx context.Context, connString string) (*Store, error) {
	cfg, err := PoolConfig(connString)
	if err != nil {
		return nil, err
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("creating the PostgreSQL pool: %w", err)
	}
	return &Store{pool: pool, ownsPool: true}, nil
}

// NewFromPool returns a store that uses pool, which stays the caller's to
// close. Build the pool from PoolConfig for the store's defaults.
func NewFromPool(pool *pgxpool.Pool) *Store {
	return &Store{pool: pool}
}

// Close closes the pool if New created it.
func (s *Store) Close() {
	if s.ownsPool {
		s.pool.Close()
	}
}

// ensureSchema creates the schema once per Store; a failure is retried by
// the next call.
func (s *Store) ensureSchema(ctx context.Context) error {
	s.schemaMu.Lock()
	defer s.schemaMu.Unlock()
	if s.schemaOK {
		return nil
	}
	var current bool
	if err := s.pool.QueryRow(ctx, "SELECT to_regclass($1) IS NOT NULL", schemaNewest).Scan(&current); err != nil {
		return fmt.Errorf("checking the schema: %w", err)
	}
	if current {
		s.schemaOK = true
		return nil
	}
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock($1)", int64(schemaLock)); err != nil {
			return err
		}
		// The simple protocol runs several statements in one Exec.
		_, err := tx.Exec(ctx, Schema, pgx.QueryExecModeSimpleProtocol)
		return err
	})
	if err != nil {
		return fmt.Errorf("creating the schema: %w", err)
	}
	s.schemaOK = true
	return nil
}

// row is a dataset's row.
type row struct {
	id     int64
	p      store.Progress
	extent int64
}

func scanProgress(r pgx.Row, id *int64, p *store.Progress, extent *int64) error {
	var checksum int64
	dest := []any{&p.Generation, &p.Seed, &p.Items, &p.Created, extent, &p.Initialized, &p.Processed, &p.Failed, &checksum,
		&p.Stream.Ingested, &p.Stream.Malformed, &p.Stream.LastEntryID}
	if id != nil {
		dest = append([]any{id}, dest...)
	}
	if err := r.Scan(dest...); err != nil {
		return err
	}
	p.Checksum = uint64(checksum)
	return nil
}

func readDataset(ctx context.Context, q interface {
	QueryRow(context.Context, string, ...any) pgx.Row
}, uid, lock string) (row, error) {
	var d row
	err := scanProgress(q.QueryRow(ctx, selectDataset+" "+lock, uid), &d.id, &d.p, &d.extent)
	if errors.Is(err, pgx.ErrNoRows) {
		return row{}, store.ErrNotFound
	}
	return d, err
}

// Initialize implements store.Store.
func (s *Store) Initialize(ctx context.Context, key store.Key, t store.Target, limit int) (store.Progress, error) {
	if limit < 1 {
		return store.Progress{}, fmt.Errorf("initializing dataset %s: limit %d, want at least 1", key, limit)
	}
	if err := s.ensureSchema(ctx); err != nil {
		return store.Progress{}, fmt.Errorf("initializing dataset %s: %w", key, err)
	}
	// Once initialized, each reconcile asks again: answer without a lock.
	if d, err := readDataset(ctx, s.pool, key.UID, ""); err == nil && d.p.Generation == t.Generation && d.p.Initialized {
		return d.p, nil
	}

	var p store.Progress
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, insertDataset, key.UID, key.Namespace, key.Name, t.Generation, t.Seed, t.Items); err != nil {
			return err
		}
		d, err := readDataset(ctx, tx, key.UID, "FOR UPDATE")
		if err != nil {
			return err
		}
		switch {
		case t.Generation < d.p.Generation:
			return fmt.Errorf("generation %d, store at %d: %w", t.Generation, d.p.Generation, store.ErrStaleGeneration)
		case t.Generation > d.p.Generation:
			created := d.p.Created
			if t.Seed != d.p.Seed {
				created = 0
			}
			d.p = store.Progress{Generation: t.Generation, Seed: t.Seed, Items: t.Items, Created: min(created, t.Items), Stream: d.p.Stream}
		}
		if !d.p.Initialized {
			if err := initStep(ctx, tx, &d, int64(limit)); err != nil {
				return err
			}
		}
		p = d.p
		_, err = tx.Exec(ctx, updateDataset, d.id, d.p.Generation, d.p.Seed, d.p.Items, d.p.Created, d.extent,
			d.p.Initialized, d.p.Processed, d.p.Failed, int64(d.p.Checksum))
		return err
	})
	if err != nil {
		return store.Progress{}, fmt.Errorf("initializing dataset %s: %w", key, err)
	}
	return p, nil
}

// initStep creates or rewrites up to limit records, or else deletes up to
// limit records beyond the target. extent bounds the indexes that may exist.
func initStep(ctx context.Context, tx pgx.Tx, d *row, limit int64) error {
	p := &d.p
	if p.Created < p.Items {
		end := min(p.Created+limit, p.Items)
		if _, err := tx.Exec(ctx, upsertRecords, d.id, p.Seed, p.Created, end); err != nil {
			return fmt.Errorf("creating records: %w", err)
		}
		p.Created = end
		d.extent = max(d.extent, end)
		p.Initialized = end == p.Items && d.extent <= p.Items
		return nil
	}
	if d.extent > p.Items {
		tag, err := tx.Exec(ctx, deleteRecordsFrom, d.id, p.Items, limit)
		if err != nil {
			return fmt.Errorf("deleting records beyond %d: %w", p.Items, err)
		}
		if tag.RowsAffected() < limit {
			d.extent = p.Items
		}
	}
	p.Initialized = d.extent <= p.Items
	return nil
}

// ProcessBatch implements store.Store.
func (s *Store) ProcessBatch(ctx context.Context, key store.Key, b store.Batch) (store.BatchResult, error) {
	if err := s.ensureSchema(ctx); err != nil {
		return store.BatchResult{}, fmt.Errorf("processing dataset %s: %w", key, err)
	}
	var res store.BatchResult
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		// KEY SHARE lets concurrent batches run and keeps Initialize and
		// Delete, which take FOR UPDATE, from changing the generation or
		// removing the dataset under the batch.
		d, err := readDataset(ctx, tx, key.UID, "FOR KEY SHARE")
		if err != nil {
			return err
		}
		if b.Generation != d.p.Generation {
			return fmt.Errorf("generation %d, store at %d: %w", b.Generation, d.p.Generation, store.ErrStaleGeneration)
		}
		if !d.p.Initialized || b.Limit < 1 {
			res.Progress = d.p
			return nil
		}

		rows, err := tx.Query(ctx, selectPending, d.id, b.Generation, b.Limit)
		if err != nil {
			return fmt.Errorf("selecting records: %w", err)
		}
		defer rows.Close()
		stream := func(yield func(store.Record, error) bool) {
			for rows.Next() {
				var r store.Record
				if err := rows.Scan(&r.Index, &r.Payload); err != nil {
					yield(store.Record{}, err)
					return
				}
				if !yield(r, nil) {
					return
				}
			}
			if err := rows.Err(); err != nil {
				yield(store.Record{}, err)
			}
		}
		t, err := store.TransformRecords(ctx, b.Workers, b.Transform, stream)
		rows.Close()
		if err != nil {
			return fmt.Errorf("reading records: %w", err)
		}
		if len(t.Results) == 0 {
			res.Progress = d.p
			return nil
		}

		idx := make([]int64, len(t.Results))
		values := make([]string, len(t.Results))
		failed := make([]bool, len(t.Results))
		for i, r := range t.Results {
			idx[i], values[i], failed[i] = r.Index, r.Value, r.Failed
		}
		if _, err := tx.Exec(ctx, updateResults, d.id, b.Generation, idx, values, failed); err != nil {
			return fmt.Errorf("writing results: %w", err)
		}
		succeeded := len(t.Results) - t.Failed
		var extent int64
		if err := scanProgress(tx.QueryRow(ctx, addProgress, d.id, succeeded, t.Failed, int64(t.Fold)), nil, &res.Progress, &extent); err != nil {
			return fmt.Errorf("updating progress: %w", err)
		}
		res.Processed, res.Failed = succeeded, t.Failed
		return nil
	})
	if err != nil {
		return store.BatchResult{}, fmt.Errorf("processing dataset %s: %w", key, err)
	}
	return res, nil
}

// Progress implements store.Store.
func (s *Store) Progress(ctx context.Context, key store.Key) (store.Progress, error) {
	if err := s.ensureSchema(ctx); err != nil {
		return store.Progress{}, fmt.Errorf("reading the progress of dataset %s: %w", key, err)
	}
	d, err := readDataset(ctx, s.pool, key.UID, "")
	if err != nil {
		return store.Progress{}, fmt.Errorf("reading the progress of dataset %s: %w", key, err)
	}
	return d.p, nil
}

// Records implements store.Store.
func (s *Store) Records(ctx context.Context, key store.Key, from int64, limit int) ([]store.Record, error) {
	if err := s.ensureSchema(ctx); err != nil {
		return nil, fmt.Errorf("reading records of dataset %s: %w", key, err)
	}
	d, err := readDataset(ctx, s.pool, key.UID, "")
	if errors.Is(err, store.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading records of dataset %s: %w", key, err)
	}
	rows, err := s.pool.Query(ctx, selectRecords, d.id, from, limit)
	if err != nil {
		return nil, fmt.Errorf("reading records of dataset %s: %w", key, err)
	}
	recs, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (store.Record, error) {
		var rec store.Record
		err := r.Scan(&rec.Index, &rec.Payload, &rec.Result, &rec.Generation, &rec.Failed)
		return rec, err
	})
	if err != nil {
		return nil, fmt.Errorf("reading records of dataset %s: %w", key, err)
	}
	return recs, nil
}

// Ingest implements store.Store.
func (s *Store) Ingest(ctx context.Context, key store.Key, entries []store.Entry) (store.IngestResult, error) {
	if err := s.ensureSchema(ctx); err != nil {
		return store.IngestResult{}, fmt.Errorf("ingesting into dataset %s: %w", key, err)
	}
	var res store.IngestResult
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		// NO KEY UPDATE serialises the ingests of one dataset (a member that
		// woke from a pause and the dataset's new owner) without blocking
		// its processing batches, and keeps Delete from removing the dataset
		// under the call.
		d, err := readDataset(ctx, tx, key.UID, "FOR NO KEY UPDATE")
		if err != nil {
			return err
		}
		res.Stream = d.p.Stream
		if len(entries) == 0 {
			return nil
		}
		ids := make([]string, len(entries))
		payloads := make([]string, len(entries))
		malformed := make([]bool, len(entries))
		for i, e := range entries {
			ids[i], malformed[i] = e.ID, e.Malformed
			if !e.Malformed {
				payloads[i] = e.Payload
			}
		}
		rows, err := tx.Query(ctx, insertEntries, d.id, ids, payloads, malformed)
		if err != nil {
			return fmt.Errorf("storing entries: %w", err)
		}
		stored, err := pgx.CollectRows(rows, pgx.RowTo[bool])
		if err != nil {
			return fmt.Errorf("storing entries: %w", err)
		}
		for _, m := range stored {
			res.Stored++
			if m {
				res.Malformed++
			}
		}
		res.Duplicates = len(entries) - res.Stored
		if res.Stored == 0 {
			return nil
		}
		err = tx.QueryRow(ctx, addStream, d.id, res.Stored-res.Malformed, res.Malformed, entries[len(entries)-1].ID).
			Scan(&res.Stream.Ingested, &res.Stream.Malformed, &res.Stream.LastEntryID)
		if err != nil {
			return fmt.Errorf("updating stream progress: %w", err)
		}
		return nil
	})
	if err != nil {
		return store.IngestResult{}, fmt.Errorf("ingesting into dataset %s: %w", key, err)
	}
	return res, nil
}

// Entries implements store.Store.
func (s *Store) Entries(ctx context.Context, key store.Key, from int64, limit int) ([]store.Entry, error) {
	if err := s.ensureSchema(ctx); err != nil {
		return nil, fmt.Errorf("reading stream entries of dataset %s: %w", key, err)
	}
	d, err := readDataset(ctx, s.pool, key.UID, "")
	if errors.Is(err, store.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading stream entries of dataset %s: %w", key, err)
	}
	rows, err := s.pool.Query(ctx, selectEntries, d.id, max(from, 0), max(limit, 0))
	if err != nil {
		return nil, fmt.Errorf("reading stream entries of dataset %s: %w", key, err)
	}
	entries, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (store.Entry, error) {
		var e store.Entry
		err := r.Scan(&e.ID, &e.Payload, &e.Malformed)
		return e, err
	})
	if err != nil {
		return nil, fmt.Errorf("reading stream entries of dataset %s: %w", key, err)
	}
	return entries, nil
}

// Delete implements store.Store.
func (s *Store) Delete(ctx context.Context, key store.Key, limit int) (bool, error) {
	if limit < 1 {
		return false, fmt.Errorf("deleting dataset %s: limit %d, want at least 1", key, limit)
	}
	if err := s.ensureSchema(ctx); err != nil {
		return false, fmt.Errorf("deleting dataset %s: %w", key, err)
	}
	done := false
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		d, err := readDataset(ctx, tx, key.UID, "FOR UPDATE")
		if errors.Is(err, store.ErrNotFound) {
			done = true
			return nil
		}
		if err != nil {
			return err
		}
		// Records first, then stream entries, limit of them in all.
		tag, err := tx.Exec(ctx, deleteRecordsFrom, d.id, 0, limit)
		if err != nil {
			return fmt.Errorf("deleting records: %w", err)
		}
		left := int64(limit) - tag.RowsAffected()
		if left == 0 {
			return nil
		}
		if tag, err = tx.Exec(ctx, deleteEntries, d.id, left); err != nil {
			return fmt.Errorf("deleting stream entries: %w", err)
		}
		if tag.RowsAffected() == left {
			return nil
		}
		if _, err := tx.Exec(ctx, "DELETE FROM largedata_datasets WHERE id = $1", d.id); err != nil {
			return err
		}
		done = true
		return nil
	})
	if err != nil {
		return false, fmt.Errorf("deleting dataset %s: %w", key, err)
	}
	return done, nil
}
