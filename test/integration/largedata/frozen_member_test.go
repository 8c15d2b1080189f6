package largedata

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/kubeshard/kubeshard/pkg/largedata/store"
	"github.com/kubeshard/kubeshard/pkg/largedata/store/postgres"
)

// TestAFrozenMembersLocksDoNotHoldUpTheNextOwner freezes a member in the
// middle of a transaction: it has locked a dataset's row and sends nothing
// more, as a process stopped with SIGSTOP would. The member that takes the
// slot over must get the dataset well within a ring's lease, not when the
// frozen one runs again; the frozen one's transaction is lost, so it cannot
// commit what it did before the freeze.
func TestAFrozenMembersLocksDoNotHoldUpTheNextOwner(t *testing.T) {
	srv := requirePostgres(t)
	ctx := t.Context()
	next, err := postgres.New(ctx, srv.URL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(next.Close)
	key := store.Key{UID: "frozen-member", Namespace: "team-a", Name: "frozen"}
	if _, err := next.Initialize(ctx, key, store.Target{Generation: 1, Seed: 1, Items: 10}, 100); err != nil {
		t.Fatal(err)
	}

	// The frozen member: the store's pool settings, one transaction holding
	// the dataset's row lock as Initialize does, then silence.
	frozen := openPool(t, srv.URL())
	tx, err := frozen.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// Returns the connection to the pool, which waits for it on Close.
	defer func() { _ = tx.Rollback(context.Background()) }()
	if _, err := tx.Exec(ctx, "SELECT id FROM largedata_datasets WHERE uid = $1 FOR UPDATE", key.UID); err != nil {
		t.Fatal(err)
	}
	frozenAt := time.Now()

	// The next owner reconciles a new generation, which locks the row.
	lease := 15 * time.Second // a ShardRing's default
	waitCtx, cancel := context.WithTimeout(ctx, 2*lease)
	defer cancel()
	p, err := next.Initialize(waitCtx, key, store.Target{Generation: 2, Seed: 2, Items: 20}, 100)
	waited := time.Since(frozenAt)
	if err != nil {
		t.Fatalf("the next owner could not initialize the dataset while a member was frozen holding its lock (waited %s): %v", waited.Round(time.Millisecond), err)
	}
	if waited >= lease {
		t.Errorf("the next owner waited %s for the frozen member's lock, want less than a lease (%s)", waited.Round(time.Millisecond), lease)
	}
	if p.Generation != 2 || p.Items != 20 {
		t.Errorf("progress after the takeover = %+v, want generation 2 with 20 items", p)
	}
	t.Logf("the next owner got the dataset %s after the freeze", waited.Round(time.Millisecond))

	// Thawed, the frozen member finds its session gone.
	if _, err := tx.Exec(ctx, "UPDATE largedata_datasets SET items = 999 WHERE uid = $1", key.UID); err == nil {
		if err := tx.Commit(ctx); err == nil {
			t.Error("the frozen member's transaction committed after the next owner took the dataset over")
		}
	}
	got, err := next.Progress(ctx, key)
	if err != nil || got.Items != 20 {
		t.Errorf("progress = %+v, %v; want the next owner's 20 items", got, err)
	}
}

// TestTheIdleTransactionTimeoutCanBeSetInTheURL checks that the default
// applies and that a connection string's own value wins.
func TestTheIdleTransactionTimeoutCanBeSetInTheURL(t *testing.T) {
	srv := requirePostgres(t)
	for _, c := range []struct{ query, want string }{
		{"", postgres.IdleInTransactionTimeout},
		{"&idle_in_transaction_session_timeout=1min", "1min"},
		{"&idle_in_transaction_session_timeout=0", "0"},
	} {
		pool := openPool(t, srv.URL()+c.query)
		var got string
		if err := pool.QueryRow(t.Context(), "SHOW idle_in_transaction_session_timeout").Scan(&got); err != nil {
			t.Fatal(err)
		}
		if got != c.want {
			t.Errorf("with %q in the URL the server has idle_in_transaction_session_timeout %q, want %q", c.query, got, c.want)
		}
	}
}

func openPool(t *testing.T, url string) *pgxpool.Pool {
	t.Helper()
	cfg, err := postgres.PoolConfig(url)
	if err != nil {
		t.Fatal(err)
	}
	pool, err := pgxpool.NewWithConfig(t.Context(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	return pool
}

// TestAMemberThatStartsDoesNotWaitForTheOthersTransactions starts a store
// (a member joining, or restarting after a fault) while another member has
// a transaction open on a dataset. The schema is there already; the new
// member must not run DDL that waits for that transaction (and, when the
// running member goes on to write the records, deadlocks with it).
func TestAMemberThatStartsDoesNotWaitForTheOthersTransactions(t *testing.T) {
	srv := requirePostgres(t)
	ctx := t.Context()
	running, err := postgres.New(ctx, srv.URL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(running.Close)
	key := store.Key{UID: "running-member", Namespace: "team-a", Name: "running"}
	if _, err := running.Initialize(ctx, key, store.Target{Generation: 1, Seed: 1, Items: 10}, 100); err != nil {
		t.Fatal(err)
	}
	// The running member in the middle of a reconcile: it holds the row.
	pool := openPool(t, srv.URL())
	tx, err := pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = tx.Rollback(context.Background()) }()
	if _, err := tx.Exec(ctx, "UPDATE largedata_datasets SET updated_at = now() WHERE uid = $1", key.UID); err != nil {
		t.Fatal(err)
	}

	starting, err := postgres.New(ctx, srv.URL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(starting.Close)
	// Well below the idle-in-transaction timeout that would end the
	// running member's transaction and hide the wait.
	waitCtx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	other := store.Key{UID: "starting-member", Namespace: "team-a", Name: "starting"}
	if _, err := starting.Initialize(waitCtx, other, store.Target{Generation: 1, Seed: 2, Items: 10}, 100); err != nil {
		t.Fatalf("a member that starts while another's transaction is open: %v", err)
	}
	if err := tx.Commit(ctx); err != nil {
		t.Errorf("the running member's transaction: %v", err)
	}
}
