// Package shardcache tests the member's slot cache on a real API server: what
// it lists when it gains slots, what it hides when it loses them, and the
// events a controller built on it receives.
package shardcache

import (
	"os"
	"testing"

	"github.com/go-logr/logr"
	ctrl "sigs.k8s.io/controller-runtime"

	"github.com/kubeshard/kubeshard/internal/testenv"
)

// env is the control plane shared by the tests of this package.
var env *testenv.Environment

func TestMain(m *testing.M) {
	// The assertions say what went wrong; controller-runtime's logs would
	// bury them.
	ctrl.SetLogger(logr.Discard())
	os.Exit(testenv.Run(m, testenv.Options{}, &env))
}
