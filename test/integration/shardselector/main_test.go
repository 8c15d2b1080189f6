// Package shardselector tests selectorMode ShardSelector on a real API
// server, once with the ShardedListAndWatch feature gate on (the server
// selects each member's objects by uid hash) and once with it off (the
// server ignores the selector; members say so and filter by themselves).
package shardselector

import (
	"os"
	"testing"

	"github.com/go-logr/logr"
	ctrl "sigs.k8s.io/controller-runtime"
)

func TestMain(m *testing.M) {
	// The assertions say what went wrong; controller-runtime's logs would
	// bury them. Members log to a logger of their own, which tests read.
	ctrl.SetLogger(logr.Discard())
	os.Exit(m.Run())
}
