package source

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// ErrUnavailable wraps a failure to reach the stream's server.
var ErrUnavailable = errors.New("stream source unavailable")

// Stream names a dataset's stream and the consumer group that records what
// the dataset has consumed of it.
type Stream struct {
	// Name is the stream's name (a Redis key).
	Name string
	// Group is the consumer group.
	Group string
}

func (s Stream) String() string { return fmt.Sprintf("stream %q group %q", s.Name, s.Group) }

// Message is one entry read from a stream.
type Message struct {
	// ID is the entry's ID in its stream, unique and increasing.
	ID string
	// Produced is when the entry was added to the stream, by the stream
	// server's clock; the zero time when the source cannot tell.
	Produced time.Time
	// Fields are the entry's fields.
	Fields map[string]string
}

// Batch is what one Read returned.
type Batch struct {
	// Messages in stream order: first those delivered before and not
	// acknowledged, then new ones.
	Messages []Message
	// Lag is how many entries of the stream the group has not been
	// delivered yet after this read; -1 when the source cannot tell.
	Lag int64
	// More: the read was cut at its limit, so entries may be waiting.
	More bool
}

// Source reads streams through consumer groups. Its methods are safe for
// concurrent use; calls for one stream and group are made by one consumer
// at a time (the member that serves the dataset, one reconcile at a time).
type Source interface {
	// Read returns at most limit entries for the group, without
	// acknowledging them: first every entry delivered before and never
	// acknowledged, to any consumer of the group (the member that
	// consumed the dataset before may have stopped with some), claimed for
	// consumer; then entries never delivered. It creates the group, at
	// the stream's first entry, when it does not exist, so that a dataset
	// may be created before its producer starts.
	Read(ctx context.Context, s Stream, consumer string, limit int) (Batch, error)

	// Ack acknowledges entries: the group never delivers them again.
	Ack(ctx context.Context, s Stream, ids []string) error

	// Forget deletes the group, when its dataset is deleted. The stream
	// stays: it belongs to its producer. Forgetting a group that does not
	// exist succeeds.
	Forget(ctx context.Context, s Stream) error
}
