package e2e

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/redis/go-redis/v9"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	datav1alpha1 "github.com/kubeshard/kubeshard/api/data/v1alpha1"
	"github.com/kubeshard/kubeshard/internal/testenv"
	"github.com/kubeshard/kubeshard/internal/testpg"
	"github.com/kubeshard/kubeshard/internal/testredis"
	"github.com/kubeshard/kubeshard/pkg/largedata"
	"github.com/kubeshard/kubeshard/pkg/largedata/source"
	"github.com/kubeshard/kubeshard/pkg/largedata/store"
	"github.com/kubeshard/kubeshard/pkg/largedata/store/postgres"
)

// TestStreamsFollowTheShard feeds 100 datasets from Redis streams while the
// ring changes under them: 3 members, a fourth joins, one is killed with
// kill -9, the newcomer leaves gracefully (3 -> 4 -> 2). 100,000 entries are
// produced meanwhile, one malformed per stream among them. Every entry must
// end up in the store exactly once (the IDs compared one by one, the
// payloads too), none may stay pending in its group, status.stream must say
// so, and the journals must show no dataset reconciled, and so consumed, by
// two members at once.
func TestStreamsFollowTheShard(t *testing.T) {
	fullSet(t)
	ctx := t.Context()
	const (
		datasets = 100
		entries  = 100_000
		produce  = 60 * time.Second
	)
	pg, rs, rc, st := streamBackends(t)

	ns := createRing(t, env.Client, "e2e-streams", leaseSeconds)
	journals := t.TempDir()
	start := func(name string) *replica {
		return startReplica(t, ns, name, "--store=postgres", "--postgres-url="+pg.URL(),
			"--stream-redis-address="+rs.Addr(), "--stream-poll-interval=500ms", "--stream-status-interval=2s",
			journalFlag(journals, name))
	}
	replicas := map[string]*replica{}
	for _, name := range []string{"op-0", "op-1", "op-2"} {
		replicas[name] = start(name)
	}
	waitFor(t, 60*time.Second, "three replicas share the ring", func() (bool, string) {
		return settled(ctx, env.Client, ns, "op-0", "op-1", "op-2")
	})

	names := make([]string, datasets)
	for i := range names {
		names[i] = fmt.Sprintf("stream-%03d", i)
		ld := &datav1alpha1.LargeData{}
		ld.Namespace, ld.Name = ns, names[i]
		ld.Spec = datav1alpha1.LargeDataSpec{Items: 10, Seed: int64(i), BatchSize: 500,
			Source: &datav1alpha1.DataSource{RedisStream: &datav1alpha1.RedisStreamSource{}}}
		if err := env.Client.Create(ctx, ld); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, 120*time.Second, "the datasets are reconciled", func() (bool, string) {
		return namesReconciled(ctx, env.Client, ns, names)
	})

	p := startProducer(ctx, t, rc, ns, names, entries, produce)
	producing := time.Now()
	time.Sleep(produce / 6)
	joined := time.Now()
	replicas["op-3"] = start("op-3")
	waitFor(t, 60*time.Second, "a fourth replica joins", func() (bool, string) {
		return settled(ctx, env.Client, ns, "op-0", "op-1", "op-2", "op-3")
	})
	time.Sleep(produce / 6)
	victim := pickVictim(t, ns, map[string]*replica{"op-0": replicas["op-0"], "op-1": replicas["op-1"], "op-2": replicas["op-2"]}, false)
	replicas[victim].signal(syscall.SIGKILL)
	killed := time.Now()
	recovery := waitFor(t, 30*time.Second, "the survivors take over the killed member's slots", func() (bool, string) {
		return servedWithout(ctx, env.Client, ns, victim)
	})
	time.Sleep(produce / 6)
	replicas["op-3"].stop(t)
	var left []string
	for _, name := range []string{"op-0", "op-1", "op-2"} {
		if name != victim {
			left = append(left, name)
		}
	}
	waitFor(t, 60*time.Second, "two replicas share the ring", func() (bool, string) {
		return settled(ctx, env.Client, ns, left...)
	})
	produced := p.wait(t)
	producedAll := time.Now()

	// Every entry in the store, as the store itself counts them.
	uids := map[string]string{}
	groups := map[string]source.Stream{}
	for _, name := range names {
		ld := &datav1alpha1.LargeData{}
		if err := env.Client.Get(ctx, types.NamespacedName{Namespace: ns, Name: name}, ld); err != nil {
			t.Fatal(err)
		}
		uids[name], groups[name] = string(ld.UID), largedata.StreamOf(ld)
	}
	drained := waitFor(t, 120*time.Second, "every entry is in the store", func() (bool, string) {
		short := 0
		for _, name := range names {
			pr, err := st.Progress(ctx, store.Key{UID: uids[name]})
			if err != nil || pr.Stream.Ingested+pr.Stream.Malformed < int64(len(produced[name])) {
				short++
			}
		}
		return short == 0, fmt.Sprintf("%d of %d datasets short", short, len(names))
	})

	// Exactly once: the stored IDs are the produced IDs, one by one.
	lost, duplicated, wrong, malformed := 0, 0, 0, 0
	for _, name := range names {
		got, err := st.Entries(ctx, store.Key{UID: uids[name]}, 0, 10*entries)
		if err != nil {
			t.Fatal(err)
		}
		seen := map[string]int{}
		for _, e := range got {
			seen[e.ID]++
			want, ok := p.payloads[name+"/"+e.ID]
			switch {
			case !ok:
				wrong++
			case e.Malformed:
				malformed++
				if want != "" {
					wrong++
				}
			case e.Payload != want:
				wrong++
			}
		}
		for _, id := range produced[name] {
			switch seen[id] {
			case 0:
				lost++
			case 1:
			default:
				duplicated++
			}
		}
		if len(got) != len(produced[name]) {
			t.Errorf("%s: %d entries stored, %d produced", name, len(got), len(produced[name]))
		}
		pending, err := rc.XPending(ctx, groups[name].Name, groups[name].Group).Result()
		if err != nil {
			t.Fatal(err)
		}
		if pending.Count != 0 {
			t.Errorf("%s: %d entries left pending in the group", name, pending.Count)
		}
	}
	if lost != 0 || duplicated != 0 || wrong != 0 || malformed != datasets {
		t.Errorf("%d entries lost, %d stored twice, %d with a wrong payload, %d malformed; want 0, 0, 0 and %d (one per stream)",
			lost, duplicated, wrong, malformed, datasets)
	}

	// What a user reads: status.stream catches up within its interval.
	waitFor(t, 30*time.Second, "status.stream shows every entry", func() (bool, string) {
		list := &datav1alpha1.LargeDataList{}
		if err := env.Client.List(ctx, list, client.InNamespace(ns)); err != nil {
			return false, err.Error()
		}
		behind := 0
		for _, ld := range list.Items {
			s := ld.Status.Stream
			if s == nil || s.Ingested+s.Malformed != int64(len(produced[ld.Name])) || s.Lag == nil || *s.Lag != 0 {
				behind++
			}
		}
		return behind == 0, fmt.Sprintf("%d of %d statuses behind", behind, len(list.Items))
	})

	// Steady: the entries produced before the first change of members
	// (less a poll); around the kill: those produced until its slots were
	// served again and a few seconds more.
	steady := latencies(ctx, t, pg.URL(), producing, joined.Add(-time.Second))
	lat := latencies(ctx, t, pg.URL(), killed, killed.Add(recovery+5*time.Second))
	for _, name := range left {
		replicas[name].stop(t)
	}
	report, _ := checkJournals(t, env.Client, ns, journals, nil)
	figures(t, "streams", append([]any{"datasets", datasets, "entries", entries, "killed", victim, "lease", lease,
		"servedAgain", recovery, "produceFor", produce, "drainedAfterProduced", drained, "drainedAt", time.Since(producedAll).Round(time.Second),
		"lost", lost, "duplicated", duplicated,
		"latencyP50", lat.p50, "latencyP99", lat.p99, "steadyP50", steady.p50During, "steadyP99", steady.p99During,
		"afterKillP50", lat.p50During, "afterKillP99", lat.p99During, "latencyMax", lat.max},
		journalFigures(report)...)...)
}

// producer adds entries to the datasets' streams, round robin, at an even
// pace, and remembers each entry's ID and payload ("" for the malformed),
// by "<dataset>/<id>".
type producer struct {
	mu       sync.Mutex
	ids      map[string][]string
	payloads map[string]string
	err      error
	done     chan struct{}
}

func startProducer(ctx context.Context, t *testing.T, rc *redis.Client, ns string, names []string, total int, over time.Duration) *producer {
	p := &producer{ids: map[string][]string{}, payloads: map[string]string{}, done: make(chan struct{})}
	rounds := total / len(names)
	tick := over / time.Duration(rounds)
	go func() {
		defer close(p.done)
		next := time.Now()
		for round := range rounds {
			pipe := rc.Pipeline()
			cmds := make([]*redis.StringCmd, len(names))
			payloads := make([]string, len(names))
			for i, name := range names {
				values := map[string]any{"payload": fmt.Sprintf("%s:%d", name, round)}
				if round == rounds/2 {
					values = map[string]any{"garbage": "no payload"} // one malformed entry per stream
				} else {
					payloads[i] = values["payload"].(string)
				}
				cmds[i] = pipe.XAdd(ctx, &redis.XAddArgs{Stream: ns + "." + name + ".data", Values: values})
			}
			if _, err := pipe.Exec(ctx); err != nil {
				p.err = fmt.Errorf("round %d: %w", round, err)
				return
			}
			p.mu.Lock()
			for i, name := range names {
				id := cmds[i].Val()
				p.ids[name] = append(p.ids[name], id)
				p.payloads[name+"/"+id] = payloads[i] // IDs are unique per stream only
			}
			p.mu.Unlock()
			next = next.Add(tick)
			time.Sleep(time.Until(next))
		}
	}()
	return p
}

// wait returns each stream's produced IDs once the producer is done.
func (p *producer) wait(t *testing.T) map[string][]string {
	t.Helper()
	<-p.done
	if p.err != nil {
		t.Fatalf("producing: %v", p.err)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	return maps.Clone(p.ids)
}

type streamLatencies struct{ p50, p99, p50During, p99During, max time.Duration }

// latencies reads, from the store, how long entries took from their
// production (the time in their ID) to their commit: over the run, and for
// the entries produced in [from, to).
func latencies(ctx context.Context, t *testing.T, url string, from, to time.Time) streamLatencies {
	t.Helper()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	const q = `
WITH l AS (
	SELECT extract(epoch FROM stored_at) * 1000 - split_part(id, '-', 1)::bigint AS ms,
	       split_part(id, '-', 1)::bigint AS produced
	FROM largedata_entries)
SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY ms),
       percentile_cont(0.99) WITHIN GROUP (ORDER BY ms),
       coalesce((SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY ms) FROM l WHERE produced >= $1 AND produced < $2), 0),
       coalesce((SELECT percentile_cont(0.99) WITHIN GROUP (ORDER BY ms) FROM l WHERE produced >= $1 AND produced < $2), 0),
       max(ms)
FROM l`
	var p50, p99, p50During, p99During, mx float64
	if err := conn.QueryRow(ctx, q, from.UnixMilli(), to.UnixMilli()).Scan(&p50, &p99, &p50During, &p99During, &mx); err != nil {
		t.Fatal(err)
	}
	ms := func(v float64) time.Duration { return time.Duration(v * float64(time.Millisecond)) }
	return streamLatencies{ms(p50), ms(p99), ms(p50During), ms(p99During), ms(mx)}
}

// TestStreamIngestRate measures how fast the members drain a backlog: 100
// datasets whose streams hold 500 entries each before the datasets exist,
// consumed by 1 member and then, on a ring of their own, by 4, on one
// PostgreSQL and one Redis. It reports entries per second from the
// datasets' creation to the last entry in the store, and fails only if an
// entry is missing.
func TestStreamIngestRate(t *testing.T) {
	fullSet(t)
	ctx := t.Context()
	const (
		datasets  = 100
		perStream = 500
	)
	pg, rs, rc, st := streamBackends(t)

	var rates []any
	for _, n := range []int{1, 4} {
		ns := createRing(t, env.Client, fmt.Sprintf("e2e-stream-rate-%d", n), leaseSeconds)
		var members []string
		replicas := map[string]*replica{}
		for i := range n {
			name := fmt.Sprintf("op-%d", i)
			members = append(members, name)
			replicas[name] = startReplica(t, ns, name, "--store=postgres", "--postgres-url="+pg.URL(),
				"--stream-redis-address="+rs.Addr(), "--stream-poll-interval=500ms")
		}
		waitFor(t, 60*time.Second, fmt.Sprintf("%d members share the ring", n), func() (bool, string) {
			return settled(ctx, env.Client, ns, members...)
		})
		for i := range datasets {
			pipe := rc.Pipeline()
			for j := range perStream {
				pipe.XAdd(ctx, &redis.XAddArgs{Stream: fmt.Sprintf("%s.backlog-%03d.data", ns, i), Values: map[string]any{"payload": fmt.Sprint(j)}})
			}
			if _, err := pipe.Exec(ctx); err != nil {
				t.Fatal(err)
			}
		}
		start := time.Now()
		keys := make([]store.Key, datasets)
		for i := range datasets {
			ld := &datav1alpha1.LargeData{}
			ld.Namespace, ld.Name = ns, fmt.Sprintf("backlog-%03d", i)
			ld.Spec = datav1alpha1.LargeDataSpec{Items: 0, BatchSize: 500,
				Source: &datav1alpha1.DataSource{RedisStream: &datav1alpha1.RedisStreamSource{}}}
			if err := env.Client.Create(ctx, ld); err != nil {
				t.Fatal(err)
			}
			keys[i] = store.Key{UID: string(ld.UID)}
		}
		waitFor(t, 5*time.Minute, fmt.Sprintf("%d members ingest the backlog", n), func() (bool, string) {
			var total int64
			for _, k := range keys {
				if p, err := st.Progress(ctx, k); err == nil {
					total += p.Stream.Ingested
				}
			}
			return total == datasets*perStream, fmt.Sprintf("%d of %d entries stored", total, datasets*perStream)
		})
		took := time.Since(start) // from the first create
		rate := float64(datasets*perStream) / took.Seconds()
		rates = append(rates, fmt.Sprintf("members%d", n), fmt.Sprintf("%.0f/s(%s)", rate, took.Round(time.Millisecond)))
		for _, r := range replicas {
			r.stop(t)
		}
	}
	figures(t, "stream-rate", append([]any{"datasets", datasets, "entries", datasets * perStream}, rates...)...)
}

// streamBackends starts a PostgreSQL for the store and a redis-server for
// the streams, both stopped when the test ends, and returns a Redis client
// and the store on them.
func streamBackends(t *testing.T) (*testpg.Server, *testredis.Server, *redis.Client, *postgres.Store) {
	t.Helper()
	ctx := t.Context()
	pg, err := testpg.Start(ctx, testpg.Options{Database: "largedata"})
	if err != nil {
		testenv.MissingDependency(t, "PostgreSQL (the Debian package postgresql)", err)
	}
	t.Cleanup(func() { _ = pg.Stop() })
	rs, err := testredis.Start(ctx)
	if errors.Is(err, testredis.ErrNotInstalled) {
		testenv.MissingDependency(t, "Redis (the Debian package redis-server)", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = rs.Stop() })
	rc := rs.Client()
	t.Cleanup(func() { _ = rc.Close() })
	st, err := postgres.New(ctx, pg.URL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(st.Close)
	return pg, rs, rc, st
}
