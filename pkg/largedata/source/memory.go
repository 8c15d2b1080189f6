package source

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"time"
)

// Memory is a Source that keeps its streams in the process, with the
// semantics of Redis consumer groups; for tests and demos.
type Memory struct {
	mu          sync.Mutex
	streams     map[string]*memStream
	unavailable bool
	now         func() time.Time
	lastMS      int64
	lastSeq     int64
}

var _ Source = (*Memory)(nil)

type memStream struct {
	entries []Message
	groups  map[string]*memGroup
}

type memGroup struct {
	// delivered is how many of the stream's entries the group was given.
	delivered int
	// pending are the delivered entries not acknowledged, in stream order.
	pending []string
}

// NewMemory returns a Memory with no stream. now stamps the entries' IDs;
// nil means time.Now.
func NewMemory(now func() time.Time) *Memory {
	if now == nil {
		now = time.Now
	}
	return &Memory{streams: map[string]*memStream{}, now: now}
}

// Add appends an entry to a stream, creating it, and returns the entry's
// ID, "<milliseconds>-<sequence>" as Redis makes them.
func (m *Memory) Add(stream string, fields map[string]string) string {
	m.mu.Lock()
	defer m.mu.Unlock()
	ms := m.now().UnixMilli()
	if ms <= m.lastMS {
		ms, m.lastSeq = m.lastMS, m.lastSeq+1
	} else {
		m.lastSeq = 0
	}
	m.lastMS = ms
	id := fmt.Sprintf("%d-%d", ms, m.lastSeq)
	st := m.stream(stream)
	st.entries = append(st.entries, Message{ID: id, Produced: time.UnixMilli(ms), Fields: fields})
	return id
}

// SetUnavailable switches fault injection on or off: while it is on, every
// method fails with ErrUnavailable and changes nothing.
func (m *Memory) SetUnavailable(unavailable bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.unavailable = unavailable
}

// Pending returns how many entries the group was delivered and has not
// acknowledged.
func (m *Memory) Pending(s Stream) int {
	m.mu.Lock()
	defer m.mu.Unlock()
	if st, ok := m.streams[s.Name]; ok {
		if g, ok := st.groups[s.Group]; ok {
			return len(g.pending)
		}
	}
	return 0
}

func (m *Memory) stream(name string) *memStream {
	st, ok := m.streams[name]
	if !ok {
		st = &memStream{groups: map[string]*memGroup{}}
		m.streams[name] = st
	}
	return st
}

func (m *Memory) check(ctx context.Context, s Stream) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if m.unavailable {
		return fmt.Errorf("%s: %w", s, ErrUnavailable)
	}
	return nil
}

// Read implements Source.
func (m *Memory) Read(ctx context.Context, s Stream, consumer string, limit int) (Batch, error) {
	if limit < 1 {
		return Batch{}, fmt.Errorf("reading %s: limit %d, want at least 1", s, limit)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.check(ctx, s); err != nil {
		return Batch{}, err
	}
	st := m.stream(s.Name)
	g, ok := st.groups[s.Group]
	if !ok {
		g = &memGroup{}
		st.groups[s.Group] = g
	}
	var b Batch
	byID := func(id string) Message {
		i, _ := slices.BinarySearchFunc(st.entries, id, func(e Message, id string) int { return compareIDs(e.ID, id) })
		return st.entries[i]
	}
	for _, id := range g.pending[:min(limit, len(g.pending))] {
		b.Messages = append(b.Messages, byID(id))
	}
	b.More = len(g.pending) >= limit
	for len(b.Messages) < limit && g.delivered < len(st.entries) {
		e := st.entries[g.delivered]
		g.delivered++
		g.pending = append(g.pending, e.ID)
		b.Messages = append(b.Messages, e)
	}
	b.More = b.More || len(b.Messages) == limit
	b.Lag = int64(len(st.entries) - g.delivered)
	return b, nil
}

// Ack implements Source.
func (m *Memory) Ack(ctx context.Context, s Stream, ids []string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.check(ctx, s); err != nil {
		return err
	}
	st, ok := m.streams[s.Name]
	if !ok {
		return nil
	}
	if g, ok := st.groups[s.Group]; ok {
		g.pending = slices.DeleteFunc(g.pending, func(id string) bool { return slices.Contains(ids, id) })
	}
	return nil
}

// Forget implements Source.
func (m *Memory) Forget(ctx context.Context, s Stream) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.check(ctx, s); err != nil {
		return err
	}
	if st, ok := m.streams[s.Name]; ok {
		delete(st.groups, s.Group)
	}
	return nil
}

// compareIDs orders two stream IDs "<ms>-<seq>".
func compareIDs(a, b string) int {
	var am, as, bm, bs int64
	fmt.Sscanf(a, "%d-%d", &am, &as) //nolint:errcheck // IDs made by Add
	fmt.Sscanf(b, "%d-%d", &bm, &bs) //nolint:errcheck // IDs made by Add
	if am != bm {
		return int(min(max(am-bm, -1), 1))
	}
	return int(min(max(as-bs, -1), 1))
}
