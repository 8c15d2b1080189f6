package largedata_test

import (
	"context"
	"fmt"

	ctrl "sigs.k8s.io/controller-runtime"

	"github.com/kubeshard/kubeshard/pkg/largedata"
	"github.com/kubeshard/kubeshard/pkg/largedata/store"
	"github.com/kubeshard/kubeshard/pkg/largedata/store/memory"
	"github.com/kubeshard/kubeshard/pkg/largedata/store/postgres"
)

// An operator's main chooses the store from its flags (--store,
// --postgres-url) and adds the reconciler to its manager.
func ExampleAdd() {
	var (
		mgr         ctrl.Manager // from ctrl.NewManager, with the data.kubeshard.dev API in its scheme
		storeKind   = "postgres"
		postgresURL = "postgres://largedata@db:5432/largedata?sslmode=disable&pool_max_conns=8"
	)
	ctx := context.Background()

	var st store.Store
	switch storeKind {
	case "memory":
		st = memory.New()
	case "postgres":
		pg, err := postgres.New(ctx, postgresURL)
		if err != nil {
			fmt.Println(err)
			return
		}
		defer pg.Close() // after mgr.Start returns
		st = pg
	}
	if err := largedata.Add(mgr, st, largedata.Options{Workers: 4}); err != nil {
		fmt.Println(err)
		return
	}
	// mgr.Start(ctx)
}
