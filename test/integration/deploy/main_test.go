package deploy

import (
	"fmt"
	"os"
	"testing"

	"github.com/kubeshard/kubeshard/internal/testenv"
)

// env is the control plane shared by the tests of this package, with the
// project's CRDs installed. The tests apply with dry-run, except the
// operator's Namespace and RBAC, which they create.
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
