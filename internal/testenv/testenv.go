package testenv

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/runtime"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	datav1alpha1 "github.com/kubeshard/kubeshard/api/data/v1alpha1"
	shardingv1alpha1 "github.com/kubeshard/kubeshard/api/sharding/v1alpha1"
	"github.com/kubeshard/kubeshard/internal/testkine"
	"github.com/kubeshard/kubeshard/internal/testpg"
)

// Options configure a test control plane.
type Options struct {
	// WebhookPaths are folders of webhook configuration manifests to install,
	// served by a webhook server the test starts (see envtest's
	// WebhookInstallOptions). Default: none.
	WebhookPaths []string

	// FeatureGates are kube-apiserver feature gates to set, such as
	// {"ShardedListAndWatch": true}. Default: the server's defaults.
	FeatureGates map[string]bool
}

// StorageEnv names the environment variable that chooses the API server's
// storage of every control plane Start starts: unset or "etcd", or "kine",
// which runs kine (bin/k8s/kine, `make k8s-bins`) over a throwaway PostgreSQL
// server instead (envtest still starts an etcd, which then stays idle).
const StorageEnv = "KUBESHARD_STORAGE"

// Environment is a running control plane.
type Environment struct {
	// Config reaches the API server as a cluster administrator.
	Config *rest.Config
	// Client is a direct (uncached) client with Scheme.
	Client client.Client
	// Scheme knows the client-go types and the project's APIs.
	Scheme *runtime.Scheme
	// Env is the underlying envtest environment.
	Env *envtest.Environment

	// With StorageEnv=kine: the API server's storage.
	kine   *testkine.Server
	kinePG *testpg.Server
}

// NewScheme returns a scheme with the client-go types and the project's APIs.
func NewScheme() *runtime.Scheme {
	s := runtime.NewScheme()
	utilruntime.Must(clientgoscheme.AddToScheme(s))
	utilruntime.Must(shardingv1alpha1.AddToScheme(s))
	utilruntime.Must(datav1alpha1.AddToScheme(s))
	return s
}

// Start starts etcd and kube-apiserver and installs the project's CRDs.
// Call Stop when done, also when a test fails.
func Start(opts Options) (*Environment, error) {
	root, err := ModuleRoot()
	if err != nil {
		return nil, err
	}
	assets := os.Getenv("KUBEBUILDER_ASSETS")
	if assets == "" {
		assets = filepath.Join(root, "bin", "k8s")
	}
	for _, bin := range []string{"kube-apiserver", "etcd"} {
		if _, err := os.Stat(filepath.Join(assets, bin)); err != nil {
			return nil, fmt.Errorf("control-plane binary %s not found in %s (run `make k8s-bins`): %w", bin, assets, err)
		}
	}

	scheme := NewScheme()
	env := &envtest.Environment{
		BinaryAssetsDirectory: assets,
		CRDDirectoryPaths:     []string{filepath.Join(root, "deploy", "base", "crd")},
		ErrorIfCRDPathMissing: true,
		Scheme:                scheme,
		WebhookInstallOptions: envtest.WebhookInstallOptions{Paths: opts.WebhookPaths},
	}
	if len(opts.FeatureGates) > 0 {
		env.ControlPlane.GetAPIServer().Configure().Set("feature-gates", FeatureGatesFlag(opts.FeatureGates))
	}
	e := &Environment{Scheme: scheme, Env: env}
	switch storage := os.Getenv(StorageEnv); storage {
	case "", "etcd":
	case "kine":
		if err := e.startKine(filepath.Join(assets, "kine")); err != nil {
			return nil, err
		}
		// A flag set here wins over the etcd envtest starts.
		env.ControlPlane.GetAPIServer().Configure().Set("etcd-servers", e.kine.URL())
	default:
		return nil, fmt.Errorf("%s=%q: want etcd or kine", StorageEnv, storage)
	}
	cfg, err := env.Start()
	if err != nil {
		return nil, errors.Join(fmt.Errorf("starting the control plane: %w", err), e.stopKine())
	}
	// The default rate limit of 5 QPS would make tests that create many
	// objects measure the client, not the system.
	cfg.QPS, cfg.Burst = 1000, 2000
	c, err := client.New(cfg, client.Options{Scheme: scheme})
	if err != nil {
		return nil, errors.Join(fmt.Errorf("creating a client: %w", err), e.Stop())
	}
	e.Config, e.Client = cfg, c
	return e, nil
}

// startKine starts a PostgreSQL server and kine on it.
func (e *Environment) startKine(binary string) error {
	ctx := context.Background()
	pg, err := testpg.Start(ctx, testpg.Options{Database: "kine"})
	if err != nil {
		return fmt.Errorf("%s=kine: starting PostgreSQL: %w", StorageEnv, err)
	}
	e.kinePG = pg
	logDir, err := os.MkdirTemp("", "testenv-kine-")
	if err != nil {
		return errors.Join(err, e.stopKine())
	}
	e.kine, err = testkine.Start(ctx, testkine.Options{Binary: binary, Database: pg.URL(), LogPath: filepath.Join(logDir, "kine.log")})
	if err != nil {
		return errors.Join(fmt.Errorf("%s=kine: %w", StorageEnv, err), e.stopKine())
	}
	return nil
}

// KineDatabase is the URL of the PostgreSQL database the API server stores
// its objects in through kine (StorageEnv=kine), or "" when it uses etcd.
func (e *Environment) KineDatabase() string {
	if e.kinePG == nil {
		return ""
	}
	return e.kinePG.URL()
}

func (e *Environment) stopKine() error {
	if e.kine != nil {
		e.kine.Stop()
		e.kine = nil
	}
	if e.kinePG != nil {
		err := e.kinePG.Stop()
		e.kinePG = nil
		return err
	}
	return nil
}

// Stop stops the control plane and removes its data.
func (e *Environment) Stop() error {
	if err := e.Env.Stop(); err != nil {
		return errors.Join(fmt.Errorf("stopping the control plane: %w", err), e.stopKine())
	}
	return e.stopKine()
}

// ModuleRoot returns the folder of the project's go.mod, found by walking up
// from the working directory (a test runs in its package's folder).
func ModuleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", fmt.Errorf("finding the module root: %w", err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("finding the module root: no go.mod above the working directory")
		}
		dir = parent
	}
}

// FeatureGatesFlag writes gates as the value of kube-apiserver's
// --feature-gates flag, sorted by name: "A=true,B=false".
func FeatureGatesFlag(gates map[string]bool) string {
	parts := make([]string, 0, len(gates))
	for _, name := range slices.Sorted(maps.Keys(gates)) {
		parts = append(parts, name+"="+strconv.FormatBool(gates[name]))
	}
	return strings.Join(parts, ",")
}

// MissingDependency stops a test that needs a program this machine lacks
// (what names it, err says what was looked for). On a developer's machine
// the test is skipped, with a message that stands out in go test's output;
// under CI=true it fails, so that a green CI run never hides a test that
// did not run. `make test` installs what is missing where it can
// (hack/test-deps.sh).
func MissingDependency(t testing.TB, what string, err error) {
	t.Helper()
	if os.Getenv("CI") == "true" {
		t.Fatalf("%s is required under CI=true: %v (make test-deps installs it)", what, err)
	}
	t.Skipf("SKIPPING: %s is not installed, so this test did not run (make test-deps installs it; CI=true makes this a failure): %v", what, err)
}

// Run is the body of a TestMain for a package whose tests share one control
// plane:
//
//	func TestMain(m *testing.M) { os.Exit(testenv.Run(m, testenv.Options{}, &env)) }
//
// It starts the control plane, sets *env, runs the tests and stops it. It
// returns the tests' exit code, or 1 when the control plane did not start;
// errors go to stderr, where go test shows them outside any test's output.
func Run(m *testing.M, opts Options, env **Environment) int {
	e, err := Start(opts)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	*env = e
	code := m.Run()
	if err := e.Stop(); err != nil {
		fmt.Fprintln(os.Stderr, err)
	}
	return code
}
