package largedata

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/klog/v2"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	datav1alpha1 "github.com/kubeshard/kubeshard/api/data/v1alpha1"
	"github.com/kubeshard/kubeshard/pkg/largedata/source"
	"github.com/kubeshard/kubeshard/pkg/largedata/store"
)

const (
	// PayloadField is the field of a stream entry that becomes the record.
	PayloadField = "payload"
	// MaxEntryPayload bounds a record from a stream, in bytes; a longer
	// payload makes the entry malformed.
	MaxEntryPayload = 4096
	// EventMalformedEntries is the reason of the Warning event about
	// entries skipped as malformed.
	EventMalformedEntries = "MalformedEntries"
)

// StreamOf is the stream and consumer group of ld's spec.source. The group
// is the object's, by UID: an object deleted and created again under its
// name reads its stream afresh.
func StreamOf(ld *datav1alpha1.LargeData) source.Stream {
	name := ld.Namespace + "." + ld.Name + ".data"
	if src := ld.Spec.Source; src != nil && src.RedisStream != nil && src.RedisStream.Stream != "" {
		name = src.RedisStream.Stream
	}
	return source.Stream{Name: name, Group: "kubeshard-largedata." + string(ld.UID)}
}

// ingested is what one ingest step did.
type ingested struct {
	stream store.StreamProgress
	lag    int64
	// more: the read was full, so entries may be waiting.
	more bool
}

// errStream marks a failure of the stream source, as opposed to the store.
type errStream struct {
	op  string
	err error
}

func (e *errStream) Error() string { return e.err.Error() }
func (e *errStream) Unwrap() error { return e.err }

// ingest does one step of ld's stream: read at most batchSize entries
// (those its previous owner left unacknowledged first), store them in one
// transaction with the dataset's stream progress, then acknowledge them. A
// crash or a lost slot between the commit and the acknowledgement leaves the
// entries pending; whoever reads the group next gets them again and the
// store skips them, so each is stored once.
func (r *Reconciler) ingest(ctx context.Context, ld *datav1alpha1.LargeData) (ingested, error) {
	s := StreamOf(ld)
	b, err := r.opts.Source.Read(ctx, s, r.opts.Consumer, batchSize(ld))
	if err != nil {
		return ingested{}, &errStream{op: streamRead, err: err}
	}
	out := ingested{lag: b.Lag, more: b.More}
	defer func() { r.lags.observe(r.metrics.streamLag, ld.UID, b.Lag, r.Clock.Now(), r.lagKeep()) }()

	entries, malformed := entriesOf(b.Messages)
	res, err := r.Store.Ingest(ctx, keyOf(ld), entries)
	if err != nil {
		return ingested{}, err // storeFailed says which dataset
	}
	out.stream = res.Stream
	if len(b.Messages) == 0 {
		return out, nil
	}
	ids := make([]string, len(b.Messages))
	for i, m := range b.Messages {
		ids[i] = m.ID
	}
	if err := r.opts.Source.Ack(ctx, s, ids); err != nil {
		// Stored, not acknowledged: read again later, skipped then.
		return ingested{}, &errStream{op: streamAck, err: err}
	}
	now := r.Clock.Now()
	for _, m := range b.Messages {
		if !m.Produced.IsZero() {
			r.metrics.streamAckLatency.Observe(now.Sub(m.Produced).Seconds())
		}
	}
	r.metrics.streamEntries.WithLabelValues(entryIngested).Add(float64(res.Stored - res.Malformed))
	r.metrics.streamEntries.WithLabelValues(entryMalformed).Add(float64(res.Malformed))
	r.metrics.streamEntries.WithLabelValues(entryDuplicate).Add(float64(res.Duplicates))
	if res.Malformed > 0 && r.opts.Recorder != nil {
		r.opts.Recorder.Eventf(ld, nil, corev1.EventTypeWarning, EventMalformedEntries, "Ingest",
			"Skipped %d malformed entries of %s (the first, %s: %s); they are counted in status.stream.malformed",
			res.Malformed, s, malformed[0].id, malformed[0].why)
	}
	logf.FromContext(ctx).V(1).Info("Ingested stream entries", "stream", s.Name, "read", len(b.Messages),
		"stored", res.Stored, "malformed", res.Malformed, "duplicates", res.Duplicates, "lag", b.Lag)
	return out, nil
}

type malformedEntry struct{ id, why string }

// entriesOf turns messages into the store's entries: the field "payload",
// at most MaxEntryPayload bytes, is the record; anything else is malformed.
// It returns the malformed ones that are new to this call, with why.
func entriesOf(msgs []source.Message) ([]store.Entry, []malformedEntry) {
	entries := make([]store.Entry, len(msgs))
	var bad []malformedEntry
	for i, m := range msgs {
		payload, ok := m.Fields[PayloadField]
		why := ""
		switch {
		case !ok:
			why = fmt.Sprintf("no field %q", PayloadField)
		case len(payload) > MaxEntryPayload:
			why = fmt.Sprintf("a payload of %d bytes, above %d", len(payload), MaxEntryPayload)
		}
		entries[i] = store.Entry{ID: m.ID, Payload: payload, Malformed: why != ""}
		if why != "" {
			entries[i].Payload = ""
			bad = append(bad, malformedEntry{m.ID, why})
		}
	}
	return entries, bad
}

// setStream writes the stream's progress into ld's status, at most every
// StreamStatusInterval while it changes, so that a busy stream costs the API
// server one status write per dataset per interval.
func (r *Reconciler) setStream(ld *datav1alpha1.LargeData, in ingested) {
	next := &datav1alpha1.StreamStatus{
		Ingested: in.stream.Ingested, Malformed: in.stream.Malformed, LastEntryID: in.stream.LastEntryID,
	}
	if in.lag >= 0 {
		next.Lag = &in.lag
	}
	now := r.Clock.Now()
	if cur := ld.Status.Stream; cur != nil {
		was := cur.DeepCopy()
		was.UpdatedAt = nil
		if equality.Semantic.DeepEqual(was, next) {
			return
		}
		if cur.UpdatedAt != nil && now.Sub(cur.UpdatedAt.Time) < r.opts.StreamStatusInterval {
			return
		}
	}
	t := metav1.NewTime(now)
	next.UpdatedAt = &t
	ld.Status.Stream = next
}

// streamFailed reports a failure of the stream source in the condition
// Degraded and returns the error, so that the controller retries with
// backoff. What was read and not acknowledged is read again then.
func (r *Reconciler) streamFailed(ctx context.Context, ld, before *datav1alpha1.LargeData, err error) (reconcile.Result, error) {
	op := streamRead
	var se *errStream
	if errors.As(err, &se) {
		op = se.op
	}
	r.metrics.streamErrors.WithLabelValues(op).Inc()
	r.setCondition(ld, datav1alpha1.ConditionDegraded, true, ReasonStreamUnavailable,
		fmt.Sprintf("The stream %s failed to %s, retrying: %v", StreamOf(ld).Name, op, err))
	if ld.Status.Phase == "" {
		ld.Status.Phase = datav1alpha1.PhasePending
	}
	return reconcile.Result{}, errors.Join(fmt.Errorf("stream of LargeData %s: %w", klog.KObj(ld), err), r.patchStatus(ctx, ld, before))
}

// noSource reports a dataset with a spec.source on an operator started
// without a stream source, and looks again after RetryMaxDelay.
func (r *Reconciler) noSource(ctx context.Context, ld, before *datav1alpha1.LargeData) (reconcile.Result, error) {
	r.setCondition(ld, datav1alpha1.ConditionDegraded, true, ReasonStreamUnavailable,
		"spec.source is set, but this operator has no stream source: start it with --stream-redis-address")
	if ld.Status.Phase == "" {
		ld.Status.Phase = datav1alpha1.PhasePending
	}
	return reconcile.Result{RequeueAfter: r.opts.RetryMaxDelay}, r.patchStatus(ctx, ld, before)
}

func (r *Reconciler) lagKeep() time.Duration { return max(30*time.Second, 5*r.opts.StreamPollInterval) }

// lagTracker sums the lag of the streams this member read recently into
// the member's lag gauge; a dataset not read for a while (its slot moved,
// it was deleted) drops out.
type lagTracker struct {
	mu    sync.Mutex
	byUID map[types.UID]lagSample
}

type lagSample struct {
	lag int64
	at  time.Time
}

func (l *lagTracker) observe(g interface{ Set(float64) }, uid types.UID, lag int64, now time.Time, keep time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.byUID == nil {
		l.byUID = map[types.UID]lagSample{}
	}
	if lag >= 0 {
		l.byUID[uid] = lagSample{lag: lag, at: now}
	}
	var sum int64
	for id, s := range l.byUID {
		if now.Sub(s.at) > keep {
			delete(l.byUID, id)
			continue
		}
		sum += s.lag
	}
	g.Set(float64(sum))
}

func (l *lagTracker) forget(g interface{ Set(float64) }, uid types.UID, now time.Time, keep time.Duration) {
	l.mu.Lock()
	delete(l.byUID, uid)
	l.mu.Unlock()
	l.observe(g, uid, -1, now, keep)
}
