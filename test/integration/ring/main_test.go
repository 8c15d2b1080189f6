// Package ring tests membership, coordination and handover with several
// members (each a controller-runtime manager) on a real API server.
package ring

import (
	"os"
	"testing"

	"github.com/kubeshard/kubeshard/internal/testenv"
)

var env *testenv.Environment

func TestMain(m *testing.M) {
	os.Exit(testenv.Run(m, testenv.Options{}, &env))
}
