package monitoring

import (
	"os"
	"testing"

	"github.com/go-logr/logr"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
)

func TestMain(m *testing.M) {
	// localcluster and the clients log through controller-runtime; the test
	// reports what matters itself, and the members' logs are in their files.
	logf.SetLogger(logr.Discard())
	os.Exit(m.Run())
}
