// Package largedata holds the integration tests of the LargeData operator:
// its reconciler in a real manager against a real kube-apiserver and etcd
// (envtest), once with the memory store and once with a real PostgreSQL
// server that the tests start (internal/testpg), and the postgres store's
// conformance tests.
package largedata

import (
	"context"
	"errors"
	"fmt"
	"os"
	"testing"

	logf "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"

	"github.com/kubeshard/kubeshard/internal/testenv"
	"github.com/kubeshard/kubeshard/internal/testpg"
)

var (
	// env is the control plane shared by the tests of this package.
	env *testenv.Environment
	// pg is the PostgreSQL server shared by the tests of this package; nil
	// when it could not start, and then pgErr says why.
	pg    *testpg.Server
	pgErr error
)

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

// run is TestMain's body, so that its deferred cleanups run before os.Exit.
// A test binary that dies (a panic, a -timeout) skips them: then envtest's
// processes and the PostgreSQL server die with it (testpg sets
// PR_SET_PDEATHSIG on the server).
func run(m *testing.M) int {
	// Reconcile errors while a store is down are expected; the log is for
	// reading a failure.
	logf.SetLogger(zap.New(zap.WriteTo(os.Stderr)))

	// The control plane and PostgreSQL start side by side: both take seconds.
	pgDone := make(chan struct{})
	go func() {
		defer close(pgDone)
		pg, pgErr = testpg.Start(context.Background(), testpg.Options{Database: "largedata"})
	}()
	var err error
	env, err = testenv.Start(testenv.Options{})
	<-pgDone
	if pgErr == nil {
		defer func() {
			if err := pg.Stop(); err != nil {
				fmt.Fprintln(os.Stderr, err)
			}
		}()
	} else {
		fmt.Fprintf(os.Stderr, "\n!!! PostgreSQL did not start; the PostgreSQL tests will %s:\n!!! %v\n\n", postgresVerdict(), pgErr)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer func() {
		if err := env.Stop(); err != nil {
			fmt.Fprintln(os.Stderr, err)
		}
	}()
	return m.Run()
}

// postgresVerdict says what a test that needs PostgreSQL does without it:
// skip on a developer's machine without it installed, fail in CI (CI=true)
// or when it is installed but broken.
func postgresVerdict() string {
	if errors.Is(pgErr, testpg.ErrNotInstalled) && os.Getenv("CI") != "true" {
		return "SKIP (set CI=true to make this a failure)"
	}
	return "FAIL"
}

// requirePostgres returns the shared server, or skips or fails t as
// postgresVerdict says.
func requirePostgres(t *testing.T) *testpg.Server {
	t.Helper()
	switch {
	case pgErr == nil:
		return pg
	case errors.Is(pgErr, testpg.ErrNotInstalled):
		testenv.MissingDependency(t, "PostgreSQL", pgErr)
	default:
		t.Fatalf("PostgreSQL is installed but did not start: %v", pgErr)
	}
	return nil
}
