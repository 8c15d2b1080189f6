package e2e

import (
	"context"
	"errors"
	"fmt"
	"syscall"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"

	datav1alpha1 "github.com/kubeshard/kubeshard/api/data/v1alpha1"
	"github.com/kubeshard/kubeshard/internal/testenv"
	"github.com/kubeshard/kubeshard/internal/testpg"
	"github.com/kubeshard/kubeshard/pkg/largedata/store"
	"github.com/kubeshard/kubeshard/pkg/largedata/store/postgres"
)

// TestDeletedWhileItsOwnerIsDead runs two members on one PostgreSQL store,
// kills one with kill -9 and at once deletes datasets of its slots: the
// survivor takes the slots over, deletes their records from the store and
// lets the objects go. No record outlives its object, even though the member
// that created the records never saw the deletion.
func TestDeletedWhileItsOwnerIsDead(t *testing.T) {
	ctx := t.Context()
	pg, err := testpg.Start(ctx, testpg.Options{Database: "largedata"})
	if err != nil {
		testenv.MissingDependency(t, "PostgreSQL (the Debian package postgresql)", err)
	}
	t.Cleanup(func() { _ = pg.Stop() })
	st, err := postgres.New(ctx, pg.URL())
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()

	ns := createRing(t, env.Client, "e2e-delete-dead-owner", leaseSeconds)
	members := []string{"op-0", "op-1"}
	replicas := map[string]*replica{}
	for _, name := range members {
		replicas[name] = startReplica(t, ns, name, "--store=postgres", "--postgres-url="+pg.URL())
	}
	waitFor(t, 60*time.Second, "two replicas share the ring", func() (bool, string) {
		return settled(ctx, env.Client, ns, members...)
	})
	victim := pickVictim(t, ns, replicas, false)
	names := namesInSlots(ns, "doomed", memberSlots(t, env.Client, ns, victim), 5)
	createNamed(t, env.Client, ns, names)
	waitFor(t, 60*time.Second, "the victim's datasets are reconciled", func() (bool, string) {
		return namesReconciled(ctx, env.Client, ns, names)
	})
	var keys []store.Key
	for _, name := range names {
		ld := &datav1alpha1.LargeData{}
		if err := env.Client.Get(ctx, types.NamespacedName{Namespace: ns, Name: name}, ld); err != nil {
			t.Fatal(err)
		}
		key := store.Key{UID: string(ld.UID), Namespace: ns, Name: name}
		if p, err := st.Progress(ctx, key); err != nil || !p.Done() {
			t.Fatalf("dataset %s in the store: %+v, %v; want it done before the fault", name, p, err)
		}
		keys = append(keys, key)
	}

	replicas[victim].signal(syscall.SIGKILL)
	killed := time.Now()
	for _, name := range names {
		ld := &datav1alpha1.LargeData{}
		ld.Namespace, ld.Name = ns, name
		if err := env.Client.Delete(ctx, ld); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, readyLimit+30*time.Second, "the survivor finalizes the dead member's deleted datasets", func() (bool, string) {
		left := 0
		for _, name := range names {
			err := env.Client.Get(ctx, types.NamespacedName{Namespace: ns, Name: name}, &datav1alpha1.LargeData{})
			if !apierrors.IsNotFound(err) {
				left++
			}
		}
		return left == 0, fmt.Sprintf("%d of %d still there", left, len(names))
	})
	gone := time.Since(killed)
	if gone > readyLimit {
		t.Errorf("the deleted datasets were gone %s after the kill, want at most %s (a lease and the takeover)",
			gone.Round(time.Millisecond), readyLimit)
	}
	for _, key := range keys {
		if p, err := st.Progress(context.WithoutCancel(ctx), key); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("dataset %s outlived its object in the store: %+v, %v", key.Name, p, err)
		}
	}
	figures(t, "delete-with-dead-owner", "members", len(members), "killed", victim, "lease", lease,
		"deleted", len(names), "goneAfter", gone, "limit", readyLimit)
}
