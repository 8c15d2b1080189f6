package memory

import (
	"context"
	"fmt"
	"slices"
	"sync"

	"github.com/kubeshard/kubeshard/pkg/largedata/store"
)

// Store is an in-memory store.Store.
type Store struct {
	mu          sync.Mutex // guards datasets and unavailable
	datasets    map[string]*dataset
	unavailable bool
}

var _ store.Store = (*Store)(nil)

// dataset is one dataset. Its mutex is held for a whole operation, as the
// postgres store holds the dataset's row lock for a transaction.
type dataset struct {
	mu sync.Mutex
	p  store.Progress
	// records are the records [0, len(records)): the store creates them in
	// index order and deletes them from the top, so they are always dense.
	records []record
	// scan is where the next batch starts looking for unprocessed records:
	// every record below it is processed for p.Generation.
	scan int64
	// entries are the stream entries in the order they were stored, and
	// entryIDs their IDs.
	entries  []store.Entry
	entryIDs map[string]struct{}
	// deleted: the dataset was removed from the store; whoever still holds
	// it must look it up again.
	deleted bool
}

type record struct {
	seed       int64
	payload    string
	result     string
	generation int64
	failed     bool
}

// New returns an empty store.
func New() *Store {
	return &Store{datasets: map[string]*dataset{}}
}

// SetUnavailable switches fault injection on or off: while it is on, every
// method fails with store.ErrUnavailable and changes nothing, as a database
// that cannot be reached.
func (s *Store) SetUnavailable(unavailable bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.unavailable = unavailable
}

func (s *Store) check(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.unavailable {
		return store.ErrUnavailable
	}
	return nil
}

// lock returns the dataset of key locked, creating it with create when it
// does not exist and create is not nil; nil when it does not exist.
func (s *Store) lock(key store.Key, create *store.Target) *dataset {
	for {
		s.mu.Lock()
		d, ok := s.datasets[key.UID]
		if !ok && create != nil {
			d = &dataset{p: store.Progress{Generation: create.Generation, Seed: create.Seed, Items: create.Items}}
			s.datasets[key.UID] = d
		}
		s.mu.Unlock()
		if d == nil {
			return nil
		}
		d.mu.Lock()
		if !d.deleted {
			return d
		}
		d.mu.Unlock()
	}
}

// Initialize implements store.Store.
func (s *Store) Initialize(ctx context.Context, key store.Key, target store.Target, limit int) (store.Progress, error) {
	if limit < 1 {
		return store.Progress{}, fmt.Errorf("initializing dataset %s: limit %d, want at least 1", key, limit)
	}
	if err := s.check(ctx); err != nil {
		return store.Progress{}, fmt.Errorf("initializing dataset %s: %w", key, err)
	}
	d := s.lock(key, &target)
	defer d.mu.Unlock()

	switch {
	case target.Generation < d.p.Generation:
		return store.Progress{}, fmt.Errorf("initializing dataset %s for generation %d, store at %d: %w",
			key, target.Generation, d.p.Generation, store.ErrStaleGeneration)
	case target.Generation > d.p.Generation:
		d.startGeneration(target)
	}
	if !d.p.Initialized {
		d.initStep(int64(limit))
	}
	return d.p, nil
}

func (d *dataset) startGeneration(t store.Target) {
	if t.Seed != d.p.Seed {
		d.p.Created = 0
	}
	d.p = store.Progress{
		Generation: t.Generation, Seed: t.Seed, Items: t.Items,
		Created: min(d.p.Created, t.Items),
		Stream:  d.p.Stream,
	}
	d.scan = 0
}

// initStep does one step of initialization: create or rewrite up to limit
// records, or else delete up to limit records beyond the target.
func (d *dataset) initStep(limit int64) {
	p := &d.p
	if p.Created < p.Items {
		end := min(p.Created+limit, p.Items)
		for i := p.Created; i < end; i++ {
			rec := record{seed: p.Seed, payload: store.Payload(p.Seed, i)}
			switch {
			case i >= int64(len(d.records)):
				d.records = append(d.records, rec)
			case d.records[i].seed != p.Seed:
				d.records[i] = rec
			}
		}
		p.Created = end
		p.Initialized = end == p.Items && int64(len(d.records)) <= p.Items
		return
	}
	if extra := int64(len(d.records)) - p.Items; extra > 0 {
		d.records = d.records[:int64(len(d.records))-min(extra, limit)]
	}
	p.Initialized = int64(len(d.records)) == p.Items
}

// ProcessBatch implements store.Store.
func (s *Store) ProcessBatch(ctx context.Context, key store.Key, b store.Batch) (store.BatchResult, error) {
	if err := s.check(ctx); err != nil {
		return store.BatchResult{}, fmt.Errorf("processing dataset %s: %w", key, err)
	}
	d := s.lock(key, nil)
	if d == nil {
		return store.BatchResult{}, fmt.Errorf("processing dataset %s: %w", key, store.ErrNotFound)
	}
	defer d.mu.Unlock()
	if b.Generation != d.p.Generation {
		return store.BatchResult{}, fmt.Errorf("processing dataset %s for generation %d, store at %d: %w",
			key, b.Generation, d.p.Generation, store.ErrStaleGeneration)
	}
	if !d.p.Initialized || b.Limit < 1 {
		return store.BatchResult{Progress: d.p}, nil
	}

	next := d.scan
	pending := func(yield func(store.Record, error) bool) {
		for n := 0; n < b.Limit && next < int64(len(d.records)); next++ {
			if r := &d.records[next]; r.generation < b.Generation {
				n++
				if !yield(store.Record{Index: next, Payload: r.payload}, nil) {
					return
				}
			}
		}
	}
	t, err := store.TransformRecords(ctx, b.Workers, b.Transform, pending)
	if err != nil {
		return store.BatchResult{}, fmt.Errorf("processing dataset %s: %w", key, err)
	}
	for _, res := range t.Results {
		r := &d.records[res.Index]
		r.result, r.failed, r.generation = res.Value, res.Failed, b.Generation
	}
	d.scan = next
	d.p.Processed += int64(len(t.Results) - t.Failed)
	d.p.Failed += int64(t.Failed)
	d.p.Checksum ^= t.Fold
	return store.BatchResult{Processed: len(t.Results) - t.Failed, Failed: t.Failed, Progress: d.p}, nil
}

// Progress implements store.Store.
func (s *Store) Progress(ctx context.Context, key store.Key) (store.Progress, error) {
	if err := s.check(ctx); err != nil {
		return store.Progress{}, fmt.Errorf("reading the progress of dataset %s: %w", key, err)
	}
	d := s.lock(key, nil)
	if d == nil {
		return store.Progress{}, fmt.Errorf("reading the progress of dataset %s: %w", key, store.ErrNotFound)
	}
	defer d.mu.Unlock()
	return d.p, nil
}

// Records implements store.Store.
func (s *Store) Records(ctx context.Context, key store.Key, from int64, limit int) ([]store.Record, error) {
	if err := s.check(ctx); err != nil {
		return nil, fmt.Errorf("reading records of dataset %s: %w", key, err)
	}
	d := s.lock(key, nil)
	if d == nil {
		return nil, nil
	}
	defer d.mu.Unlock()
	from = max(from, 0)
	end := min(from+int64(max(limit, 0)), int64(len(d.records)))
	var out []store.Record
	for i := from; i < end; i++ {
		r := d.records[i]
		out = append(out, store.Record{Index: i, Payload: r.payload, Result: r.result, Generation: r.generation, Failed: r.failed})
	}
	return out, nil
}

// Ingest implements store.Store.
func (s *Store) Ingest(ctx context.Context, key store.Key, entries []store.Entry) (store.IngestResult, error) {
	if err := s.check(ctx); err != nil {
		return store.IngestResult{}, fmt.Errorf("ingesting into dataset %s: %w", key, err)
	}
	d := s.lock(key, nil)
	if d == nil {
		return store.IngestResult{}, fmt.Errorf("ingesting into dataset %s: %w", key, store.ErrNotFound)
	}
	defer d.mu.Unlock()
	if d.entryIDs == nil {
		d.entryIDs = map[string]struct{}{}
	}
	var res store.IngestResult
	for _, e := range entries {
		if _, ok := d.entryIDs[e.ID]; ok {
			res.Duplicates++
			continue
		}
		if e.Malformed {
			e.Payload = ""
			res.Malformed++
		}
		d.entryIDs[e.ID] = struct{}{}
		d.entries = append(d.entries, e)
		res.Stored++
	}
	if res.Stored > 0 {
		d.p.Stream.Ingested += int64(res.Stored - res.Malformed)
		d.p.Stream.Malformed += int64(res.Malformed)
		d.p.Stream.LastEntryID = entries[len(entries)-1].ID
	}
	res.Stream = d.p.Stream
	return res, nil
}

// Entries implements store.Store.
func (s *Store) Entries(ctx context.Context, key store.Key, from int64, limit int) ([]store.Entry, error) {
	if err := s.check(ctx); err != nil {
		return nil, fmt.Errorf("reading stream entries of dataset %s: %w", key, err)
	}
	d := s.lock(key, nil)
	if d == nil {
		return nil, nil
	}
	defer d.mu.Unlock()
	from = min(max(from, 0), int64(len(d.entries)))
	end := min(from+int64(max(limit, 0)), int64(len(d.entries)))
	return slices.Clone(d.entries[from:end]), nil
}

// Delete implements store.Store.
func (s *Store) Delete(ctx context.Context, key store.Key, limit int) (bool, error) {
	if limit < 1 {
		return false, fmt.Errorf("deleting dataset %s: limit %d, want at least 1", key, limit)
	}
	if err := s.check(ctx); err != nil {
		return false, fmt.Errorf("deleting dataset %s: %w", key, err)
	}
	d := s.lock(key, nil)
	if d == nil {
		return true, nil
	}
	defer d.mu.Unlock()
	// Records first, then stream entries, limit of them in all.
	nr := min(limit, len(d.records))
	clear(d.records[len(d.records)-nr:]) // let the strings go
	d.records = d.records[:len(d.records)-nr]
	ne := min(limit-nr, len(d.entries))
	for _, e := range d.entries[len(d.entries)-ne:] {
		delete(d.entryIDs, e.ID)
	}
	clear(d.entries[len(d.entries)-ne:])
	d.entries = d.entries[:len(d.entries)-ne]
	if len(d.records) > 0 || len(d.entries) > 0 {
		return false, nil
	}
	d.deleted = true
	s.mu.Lock()
	delete(s.datasets, key.UID)
	s.mu.Unlock()
	return true, nil
}
