// Package webhook holds the integration tests that need the slot-label
// webhook installed in the API server: a control plane of their own, whose
// admission chain calls a webhook server the tests run.
package webhook

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"

	logf "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"

	"github.com/kubeshard/kubeshard/internal/testenv"
)

// env is the control plane shared by the tests of this package, with the
// generated webhook configuration (deploy/base/webhook) pointed at
// env.Env.WebhookInstallOptions' local serving address.
var env *testenv.Environment

func TestMain(m *testing.M) {
	logf.SetLogger(zap.New(zap.WriteTo(os.Stderr)))
	root, err := testenv.ModuleRoot()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	webhooks := filepath.Join(root, "deploy", "base", "webhook")
	os.Exit(testenv.Run(m, testenv.Options{WebhookPaths: []string{webhooks}}, &env))
}
