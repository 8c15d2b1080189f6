// Package ring tests membership, coordination and handover with several
// members (each a controller-runtime manager) on a real API server.
package ring

import (
	"fmt"
	"os"
	"testing"

	"github.com/kubeshard/kubeshard/internal/testenv"
)

var env *testenv.Environment

func TestMain(m *testing.M) {
	var err error
	env, err = testenv.Start(testenv.Options{})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code := m.Run()
	if err := env.Stop(); err != nil {
		fmt.Fprintln(os.Stderr, err)
	}
	os.Exit(code)
}
