package largedata

import (
	"testing"

	"github.com/kubeshard/kubeshard/pkg/largedata/store"
	"github.com/kubeshard/kubeshard/pkg/largedata/store/postgres"
	"github.com/kubeshard/kubeshard/pkg/largedata/store/storetest"
)

// TestPostgresStore runs the store conformance tests against a real
// PostgreSQL: batching, idempotency and exactly-once processing under
// concurrent batches (FOR UPDATE SKIP LOCKED).
func TestPostgresStore(t *testing.T) {
	srv := requirePostgres(t)
	st, err := postgres.New(t.Context(), srv.URL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(st.Close)
	storetest.Run(t, func(*testing.T) store.Store { return st })
}
