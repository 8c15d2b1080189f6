package deploy

import (
	"os"
	"testing"

	"github.com/kubeshard/kubeshard/internal/testenv"
)

// env is the control plane shared by the tests of this package, with the
// project's CRDs installed. The tests apply with dry-run, except the
// operator's Namespace and RBAC, which they create.
var env *testenv.Environment

func TestMain(m *testing.M) {
	os.Exit(testenv.Run(m, testenv.Options{}, &env))
}
