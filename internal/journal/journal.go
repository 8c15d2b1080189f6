package journal

import (
	"bytes"
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"time"

	"k8s.io/utils/clock"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/kubeshard/kubeshard/pkg/ring"
)

// Result is how a reconcile ended.
type Result string

// The results of a reconcile.
const (
	// ResultOK: the reconciler returned no error.
	ResultOK Result = "ok"
	// ResultError: the reconciler returned an error (it will be retried).
	ResultError Result = "error"
	// ResultDropped: the reconcile's context was cancelled before it returned,
	// because the member fenced itself or the process is stopping, so its
	// work may be incomplete whatever it returned.
	ResultDropped Result = "dropped"
)

// Entry is one reconcile, one line of a journal.
type Entry struct {
	// Object is "namespace/name" ("name" for a cluster-scoped object).
	Object string `json:"object"`
	Slot   int    `json:"slot"`
	Member string `json:"member"`
	// Generation is the object's metadata.generation when the reconcile
	// started; zero (left out) when the object could not be read.
	Generation int64     `json:"generation,omitempty"`
	Start      time.Time `json:"start"`
	End        time.Time `json:"end"`
	Result     Result    `json:"result"`
	// Requests is how many requests the reconcile sent to the API server,
	// and LastRequest when it sent the last one (zero when none): what it
	// did that others can see. They are recorded only when the operator's
	// transport is wrapped with TrackRequests.
	Requests    int       `json:"requests,omitempty"`
	LastRequest time.Time `json:"lastRequest,omitzero"`
}

// Options configure a Journal.
type Options struct {
	// Member is the replica's member name, written into every entry. Required.
	Member string

	// Slots is the ring's number of slots, to compute each entry's slot.
	// Default: ring.DefaultSlots.
	Slots int

	// Reader reads the reconciled object at the start of each reconcile, for
	// its generation; the manager's (cached) client is cheap. Default: none,
	// and entries carry no generation.
	Reader client.Reader

	// NewObject returns an empty object of the reconciled kind. Required with
	// Reader.
	NewObject func() client.Object

	// ByUID computes each entry's slot from the object's uid, as a ring in
	// selectorMode ShardSelector does (ring.UIDSlot), instead of from its
	// namespace and name. Needs Reader; an entry whose object could not be
	// read gets slot -1, which Check leaves out of the overlap check.
	ByUID bool

	// FlushInterval bounds how long an entry stays in memory before it is
	// written to the file. Default: 100ms.
	FlushInterval time.Duration

	// Clock gives the entries' times and paces the flushes. Default: the real
	// clock.
	Clock clock.WithTicker
}

func (o Options) withDefaults() Options {
	if o.Slots == 0 {
		o.Slots = ring.DefaultSlots
	}
	if o.FlushInterval == 0 {
		o.FlushInterval = 100 * time.Millisecond
	}
	if o.Clock == nil {
		o.Clock = clock.RealClock{}
	}
	return o
}

func (o Options) validate() error {
	switch {
	case o.Member == "":
		return errors.New("journal: Options.Member is required")
	case o.Slots < 0:
		return errors.New("journal: Options.Slots must not be negative")
	case o.FlushInterval < 0:
		return errors.New("journal: Options.FlushInterval must not be negative")
	case o.Reader != nil && o.NewObject == nil:
		return errors.New("journal: Options.NewObject is required with Options.Reader")
	case o.ByUID && o.Reader == nil:
		return errors.New("journal: Options.ByUID needs Options.Reader, to read each object's uid")
	}
	return nil
}

// maxBuffered is how many bytes of entries trigger a write before the next
// flush tick, so that a burst of reconciles does not grow memory unbounded.
const maxBuffered = 64 << 10

// Journal appends entries to a file. It is safe for concurrent use; entries
// reach the file at least every FlushInterval and on Close.
type Journal struct {
	opts Options
	file *os.File

	mu     sync.Mutex
	buf    []byte // whole lines only, so that every write ends on a line
	err    error  // the first write error, returned by Close
	closed bool

	stop chan struct{}
	done chan struct{}
}

// Open opens (or creates) the journal file at path for appending and starts
// flushing it every Options.FlushInterval. A partial last line, left by a
// process killed in the middle of a write, is cut off first, so that the
// entries of the next process start on a line of their own. Close the
// Journal when the process stops.
func Open(path string, opts Options) (*Journal, error) {
	opts = opts.withDefaults()
	if err := opts.validate(); err != nil {
		return nil, err
	}
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("opening the journal: %w", err)
	}
	if err := cutPartialLine(f); err != nil {
		_ = f.Close()
		return nil, fmt.Errorf("repairing the journal %s: %w", path, err)
	}
	j := &Journal{opts: opts, file: f, stop: make(chan struct{}), done: make(chan struct{})}
	go j.flushEvery(opts.FlushInterval)
	return j, nil
}

// cutPartialLine truncates f after its last newline.
func cutPartialLine(f *os.File) error {
	info, err := f.Stat()
	if err != nil {
		return err
	}
	size := info.Size()
	if size == 0 {
		return nil
	}
	// Lines are short; a partial one fits in the last few KiB, and a file
	// whose tail has no newline at all is cut to nothing.
	const window = 8 << 10
	from := max(size-window, 0)
	tail := make([]byte, size-from)
	if _, err := f.ReadAt(tail, from); err != nil && !errors.Is(err, io.EOF) {
		return err
	}
	if tail[len(tail)-1] == '\n' {
		return nil
	}
	keep := int64(0)
	if i := bytes.LastIndexByte(tail, '\n'); i >= 0 {
		keep = from + int64(i) + 1
	}
	return f.Truncate(keep)
}

func (j *Journal) flushEvery(interval time.Duration) {
	defer close(j.done)
	ticker := j.opts.Clock.NewTicker(interval)
	defer ticker.Stop()
	for {
		select {
		case <-j.stop:
			return
		case <-ticker.C():
			j.mu.Lock()
			j.flushLocked()
			j.mu.Unlock()
		}
	}
}

// Record appends one entry. After Close it does nothing.
func (j *Journal) Record(e Entry) {
	line, err := json.Marshal(e)
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.closed {
		return
	}
	if err != nil {
		j.err = cmp.Or(j.err, fmt.Errorf("encoding a journal entry: %w", err))
		return
	}
	j.buf = append(append(j.buf, line...), '\n')
	if len(j.buf) >= maxBuffered {
		j.flushLocked()
	}
}

func (j *Journal) flushLocked() {
	if len(j.buf) == 0 {
		return
	}
	if _, err := j.file.Write(j.buf); err != nil {
		j.err = cmp.Or(j.err, fmt.Errorf("writing the journal: %w", err))
	}
	j.buf = j.buf[:0]
}

// Close writes the entries still in memory and closes the file. It returns
// the first error met while writing, if any. Reconciles that end after Close
// are not recorded.
func (j *Journal) Close() error {
	j.mu.Lock()
	if j.closed {
		j.mu.Unlock()
		return nil
	}
	j.closed = true
	j.mu.Unlock()
	close(j.stop)
	<-j.done

	j.mu.Lock()
	defer j.mu.Unlock()
	j.flushLocked()
	if err := j.file.Close(); err != nil {
		j.err = cmp.Or(j.err, fmt.Errorf("closing the journal: %w", err))
	}
	return j.err
}
