// Package e2e runs the LargeData operator as real processes, several
// replicas of one ring, against a real API server: what a user deploys.
// Every replica keeps a journal of its reconciles (--journal), and every
// scenario ends by merging the journals and failing on any two members that
// reconciled one slot at the same time and on any object whose final
// generation was never reconciled.
//
// A plain go test runs the short set (a member killed, objects labelled
// without a webhook) on envtest. The full set (make e2e, KUBESHARD_E2E=full)
// adds a paused member, a killed coordinator, and, on a local control plane
// with kube-controller-manager (test/localcluster) whose StatefulSet pods run
// as local processes (test/podrunner), scaling under load and an API server
// restart. Each scenario logs its measurements on one "FIGURES" line.
// KUBESHARD_E2E_LOGS=<folder> keeps the members' logs there, at debug level.
package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/go-logr/logr"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	logf "sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/kubeshard/kubeshard/internal/testenv"
)

var (
	env        *testenv.Environment
	kubeconfig string
	operator   string
)

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	// envtest and localcluster log through controller-runtime; the tests
	// report what matters themselves.
	logf.SetLogger(logr.Discard())
	dir, err := os.MkdirTemp("", "kubeshard-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)

	root, err := testenv.ModuleRoot()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	operator = filepath.Join(dir, "largedata-operator")
	build := exec.Command("go", "build", "-o", operator, "./cmd/largedata-operator")
	build.Dir, build.Stdout, build.Stderr = root, os.Stdout, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "building the operator:", err)
		return 1
	}

	env, err = testenv.Start(testenv.Options{FeatureGates: apiServerGates()})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	if env.KineDatabase() != "" {
		fmt.Println("e2e: the API server keeps its objects in kine over PostgreSQL, not in etcd")
	}
	defer func() {
		if err := env.Stop(); err != nil {
			fmt.Fprintln(os.Stderr, err)
		}
	}()
	user, err := env.Env.AddUser(envtest.User{Name: "e2e-operator", Groups: []string{"system:masters"}}, nil)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	data, err := user.KubeConfig()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	kubeconfig = filepath.Join(dir, "kubeconfig")
	if err := os.WriteFile(kubeconfig, data, 0o600); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer func() {
		if err := stopLocalCluster(); err != nil {
			fmt.Fprintln(os.Stderr, err)
		}
	}()
	return m.Run()
}
