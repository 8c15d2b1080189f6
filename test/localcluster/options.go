package localcluster

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/kubeshard/kubeshard/internal/testenv"
)

// Component names one process of the control plane.
type Component string

// The components of a Cluster, also the names of their binaries and log files.
const (
	Etcd              Component = "etcd"
	Kine              Component = "kine"
	APIServer         Component = "kube-apiserver"
	ControllerManager Component = "kube-controller-manager"
)

// DefaultControllers returns the kube-controller-manager controllers a Cluster
// runs unless Options.Controllers says otherwise: enough for StatefulSets (the
// statefulset controller creates and deletes the pods, the garbage collector
// removes them with their StatefulSet) and for deleting namespaces. Left out on
// purpose: node-lifecycle and pod-garbage-collector, which would evict or
// delete pods bound to a node that has no kubelet heartbeat (or no Node object),
// and the service account controllers, which nothing needs while the
// ServiceAccount admission plugin is disabled.
func DefaultControllers() []string {
	return []string{"statefulset-controller", "garbage-collector-controller", "namespace-controller"}
}

// Options configure a Cluster. The zero value is a working configuration.
type Options struct {
	// BinDir is the folder with etcd, kube-apiserver, kube-controller-manager
	// and kubectl. Default: <module root>/bin/k8s (built by `make k8s-bins`),
	// where the module root is the first folder above the working directory
	// with a go.mod.
	BinDir string

	// Dir receives the certificates, etcd's data, the admin kubeconfig and one
	// log file per process (<Dir>/<component>.log). Default: a new temporary
	// folder that Stop removes; set Dir to keep the logs.
	Dir string

	// KineDatabase, when set, is the URL of a PostgreSQL database (such as
	// internal/testpg's) that kine (bin/k8s/kine, built by `make k8s-bins`) serves
	// to kube-apiserver as its storage, in place of etcd: the etcd API over a
	// SQL table, k3s' storage layer. kine creates the database if the URL's
	// user may. Default: etcd.
	KineDatabase string

	// FeatureGates are passed to kube-apiserver as --feature-gates, for example
	// {"ShardedListAndWatch": true}. Default: none.
	FeatureGates map[string]bool

	// ExtraAPIServerFlags are appended to kube-apiserver's flags (after the
	// ones Start sets, so a repeated single-valued flag overrides). Default: none.
	ExtraAPIServerFlags []string

	// APIServerEnv is added to kube-apiserver's environment, such as
	// GOGC=400: with its watch cache off for a kind the API server's heap is
	// small, and the Go collector runs often. Default: none.
	APIServerEnv []string

	// ExtraControllerManagerFlags are appended to kube-controller-manager's
	// flags in the same way. Default: none.
	ExtraControllerManagerFlags []string

	// Controllers are the kube-controller-manager controllers to run
	// (--controllers). Default: DefaultControllers().
	Controllers []string

	// Output, if set, also receives the output of every process, each line
	// prefixed with the component's name (os.Stderr when debugging). Default:
	// the log files in Dir only.
	Output io.Writer

	// StartTimeout bounds how long each process may take to become ready.
	// Default: 60s, ample for kube-apiserver on a busy CI machine.
	StartTimeout time.Duration

	// StopTimeout is how long Stop and RestartAPIServer wait for a process to
	// exit after SIGTERM before they SIGKILL it. Default: 10s.
	StopTimeout time.Duration
}

// applyDefaults fills in every unset field. It creates the temporary Dir, so
// its caller owns removing it; removeDir says whether it did.
func applyDefaults(opts Options) (_ Options, removeDir bool, err error) {
	if opts.BinDir == "" {
		root, err := testenv.ModuleRoot()
		if err != nil {
			return opts, false, err
		}
		opts.BinDir = filepath.Join(root, "bin", "k8s")
	}
	if len(opts.Controllers) == 0 {
		opts.Controllers = DefaultControllers()
	}
	if opts.StartTimeout == 0 {
		opts.StartTimeout = 60 * time.Second
	}
	if opts.StopTimeout == 0 {
		opts.StopTimeout = 10 * time.Second
	}
	if opts.Dir == "" {
		dir, err := os.MkdirTemp("", "localcluster-")
		if err != nil {
			return opts, false, fmt.Errorf("creating the cluster folder: %w", err)
		}
		opts.Dir, removeDir = dir, true
	}
	return opts, removeDir, nil
}
