package integration

import (
	"os"
	"testing"

	"github.com/kubeshard/kubeshard/internal/testenv"
)

// env is the control plane shared by the tests of this package; starting one
// takes about five seconds.
var env *testenv.Environment

func TestMain(m *testing.M) {
	os.Exit(testenv.Run(m, testenv.Options{}, &env))
}
