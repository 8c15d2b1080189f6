package source_test

import (
	"errors"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/kubeshard/kubeshard/internal/testenv"
	"github.com/kubeshard/kubeshard/internal/testredis"
	"github.com/kubeshard/kubeshard/pkg/largedata/source"
	"github.com/kubeshard/kubeshard/pkg/largedata/source/sourcetest"
)

func startRedis(t *testing.T) *testredis.Server {
	t.Helper()
	srv, err := testredis.Start(t.Context())
	if errors.Is(err, testredis.ErrNotInstalled) {
		testenv.MissingDependency(t, "Redis", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := srv.Stop(); err != nil {
			t.Error(err)
		}
	})
	return srv
}

// TestRedis runs the conformance tests against a real redis-server.
func TestRedis(t *testing.T) {
	srv := startRedis(t)
	c := srv.Client()
	t.Cleanup(func() { _ = c.Close() })
	sourcetest.Run(t, source.NewRedis(c), func(t *testing.T, stream string, fields map[string]string) string {
		id, err := c.XAdd(t.Context(), &redis.XAddArgs{Stream: stream, Values: fields}).Result()
		if err != nil {
			t.Fatalf("XADD: %v", err)
		}
		return id
	})
}

// TestRedisDownIsUnavailable: a server that does not answer is reported as
// ErrUnavailable, and once it is back (with its append-only file) the group
// goes on where it was.
func TestRedisDownIsUnavailable(t *testing.T) {
	srv := startRedis(t)
	c := redis.NewClient(&redis.Options{Addr: srv.Addr(), MaxRetries: -1, DialTimeout: time.Second})
	t.Cleanup(func() { _ = c.Close() })
	src := source.NewRedis(c)
	s := source.Stream{Name: "down", Group: "g"}
	for range 3 {
		if err := c.XAdd(t.Context(), &redis.XAddArgs{Stream: s.Name, Values: map[string]string{"payload": "x"}}).Err(); err != nil {
			t.Fatal(err)
		}
	}
	b, err := src.Read(t.Context(), s, "m0", 2)
	if err != nil || len(b.Messages) != 2 {
		t.Fatalf("Read: %d entries, %v", len(b.Messages), err)
	}
	if err := srv.Shutdown(); err != nil {
		t.Fatal(err)
	}
	if _, err := src.Read(t.Context(), s, "m0", 2); !errors.Is(err, source.ErrUnavailable) {
		t.Fatalf("Read with the server down: %v, want ErrUnavailable", err)
	}
	if err := srv.Restart(t.Context()); err != nil {
		t.Fatal(err)
	}
	b, err = src.Read(t.Context(), s, "m1", 10)
	if err != nil || len(b.Messages) != 3 {
		t.Fatalf("after the restart: %d entries (%v), want the 2 pending and the 1 new", len(b.Messages), err)
	}
}
