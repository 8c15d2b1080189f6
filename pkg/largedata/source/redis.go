package source

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// Redis is a Source over Redis Streams (Redis 7.0 or later, for the group's
// lag).
type Redis struct {
	client redis.UniversalClient
}

var _ Source = (*Redis)(nil)

// NewRedis returns a Source that uses client, which stays the caller's to
// close.
func NewRedis(client redis.UniversalClient) *Redis {
	return &Redis{client: client}
}

// Read implements Source: XAUTOCLAIM of everything pending in the group,
// then XREADGROUP of new entries, then XINFO GROUPS for the lag.
func (r *Redis) Read(ctx context.Context, s Stream, consumer string, limit int) (Batch, error) {
	if limit < 1 {
		return Batch{}, fmt.Errorf("reading %s: limit %d, want at least 1", s, limit)
	}
	claimed, next, err := r.claim(ctx, s, consumer, limit)
	if isNoGroup(err) {
		if err := r.createGroup(ctx, s); err != nil {
			return Batch{}, err
		}
		claimed, next, err = r.claim(ctx, s, consumer, limit)
	}
	if err != nil {
		return Batch{}, fmt.Errorf("claiming pending entries of %s: %w", s, unavailable(err))
	}
	b := Batch{Messages: claimed, More: next != "0-0" || len(claimed) == limit}
	if len(claimed) < limit {
		streams, err := r.client.XReadGroup(ctx, &redis.XReadGroupArgs{
			Group: s.Group, Consumer: consumer, Streams: []string{s.Name, ">"},
			Count: int64(limit - len(claimed)), Block: -1, // no BLOCK: a reconcile never waits for entries
		}).Result()
		if err != nil && !errors.Is(err, redis.Nil) {
			return Batch{}, fmt.Errorf("reading new entries of %s: %w", s, unavailable(err))
		}
		for _, st := range streams {
			for _, m := range st.Messages {
				b.Messages = append(b.Messages, message(m))
			}
			b.More = b.More || len(b.Messages) == limit
		}
	}
	if b.Lag, err = r.lag(ctx, s); err != nil {
		return Batch{}, err
	}
	return b, nil
}

func (r *Redis) claim(ctx context.Context, s Stream, consumer string, limit int) ([]Message, string, error) {
	// MinIdle 0: only the dataset's owner reads its group, so whatever is
	// pending was left by an owner that is gone (or by this one's failed
	// reconcile). Entries trimmed from the stream while pending are dropped
	// from the group by XAUTOCLAIM itself.
	msgs, next, err := r.client.XAutoClaim(ctx, &redis.XAutoClaimArgs{
		Stream: s.Name, Group: s.Group, Consumer: consumer, MinIdle: 0, Start: "0-0", Count: int64(limit),
	}).Result()
	if err != nil {
		return nil, "", err
	}
	out := make([]Message, 0, len(msgs))
	for _, m := range msgs {
		out = append(out, message(m))
	}
	return out, next, nil
}

func (r *Redis) createGroup(ctx context.Context, s Stream) error {
	err := r.client.XGroupCreateMkStream(ctx, s.Name, s.Group, "0").Err()
	if err != nil && !strings.HasPrefix(err.Error(), "BUSYGROUP") {
		return fmt.Errorf("creating the consumer group of %s: %w", s, unavailable(err))
	}
	return nil
}

func (r *Redis) lag(ctx context.Context, s Stream) (int64, error) {
	groups, err := r.client.XInfoGroups(ctx, s.Name).Result()
	if err != nil {
		return 0, fmt.Errorf("reading the lag of %s: %w", s, unavailable(err))
	}
	for _, g := range groups {
		if g.Name == s.Group {
			return g.Lag, nil
		}
	}
	return -1, nil
}

// Ack implements Source.
func (r *Redis) Ack(ctx context.Context, s Stream, ids []string) error {
	if len(ids) == 0 {
		return nil
	}
	if err := r.client.XAck(ctx, s.Name, s.Group, ids...).Err(); err != nil {
		return fmt.Errorf("acknowledging %d entries of %s: %w", len(ids), s, unavailable(err))
	}
	return nil
}

// Forget implements Source.
func (r *Redis) Forget(ctx context.Context, s Stream) error {
	err := r.client.XGroupDestroy(ctx, s.Name, s.Group).Err()
	// A stream that does not exist has no group either.
	if err != nil && !strings.Contains(err.Error(), "requires the key to exist") {
		return fmt.Errorf("deleting the consumer group of %s: %w", s, unavailable(err))
	}
	return nil
}

func message(m redis.XMessage) Message {
	fields := make(map[string]string, len(m.Values))
	for k, v := range m.Values {
		switch v := v.(type) {
		case string:
			fields[k] = v
		case nil:
		default:
			fields[k] = fmt.Sprint(v)
		}
	}
	return Message{ID: m.ID, Produced: idTime(m.ID), Fields: fields}
}

// idTime is the time in a Redis stream ID ("<milliseconds>-<sequence>").
func idTime(id string) time.Time {
	ms, _, ok := strings.Cut(id, "-")
	if !ok {
		return time.Time{}
	}
	n, err := strconv.ParseInt(ms, 10, 64)
	if err != nil {
		return time.Time{}
	}
	return time.UnixMilli(n)
}

func isNoGroup(err error) bool {
	return err != nil && strings.HasPrefix(err.Error(), "NOGROUP")
}

// unavailable marks errors of the connection (not the server's answers to
// a command) as ErrUnavailable.
func unavailable(err error) error {
	var rerr redis.Error
	if errors.As(err, &rerr) {
		return err // the server answered: a wrong type, a refused command
	}
	return fmt.Errorf("%w: %w", ErrUnavailable, err)
}
