package podrunner

import (
	"errors"
	"fmt"
	"os"
	"time"

	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/kubernetes"
)

// Environment variables the runner sets for every process, besides the
// container's own env. The port variables can also be used as placeholders in
// the container's args: "--health-probe-bind-address=:$(HEALTH_PORT)" becomes
// "--health-probe-bind-address=:40123". Every pod gets its own free loopback
// ports, kept across restarts of its process.
const (
	EnvPodName      = "POD_NAME"
	EnvPodNamespace = "POD_NAMESPACE"
	EnvKubeconfig   = "KUBECONFIG"
	EnvMetricsPort  = "METRICS_PORT"
	EnvHealthPort   = "HEALTH_PORT"
	EnvWebhookPort  = "WEBHOOK_PORT"
)

// Options configure a Runner.
type Options struct {
	// Client watches, binds, updates and deletes the pods. Required.
	Client kubernetes.Interface

	// Namespace of the pods to run. Default: all namespaces.
	Namespace string

	// Selector of the pods to run. Default: every pod of Namespace.
	Selector labels.Selector

	// Binary is the executable run for each pod in place of its first
	// container's image; the container's args (with placeholders expanded) are
	// its arguments. Required.
	Binary string

	// Kubeconfig is passed to every process as KUBECONFIG. Default: unset, the
	// process inherits the test's KUBECONFIG, if any.
	Kubeconfig string

	// ExtraEnv ("NAME=value") is added to every process's environment and wins
	// over everything else. The environment is, from weakest to strongest: the
	// test process's own, the container's env, the runner's variables
	// (POD_NAME, ...), ExtraEnv. Default: none.
	ExtraEnv []string

	// LogDir receives each process's output in <LogDir>/<pod>.log, appended
	// across restarts. Default: a new temporary folder, kept after Run ends
	// so that the logs can be read.
	LogDir string

	// NodeName is the node pods are bound to. No Node object is needed: the
	// binding subresource does not check that the node exists, and no
	// controller that would (node lifecycle, pod garbage collector) runs in a
	// localcluster. Default: "local".
	NodeName string

	// ReadinessPath is fetched over http://127.0.0.1:$(HEALTH_PORT) to decide
	// whether a pod is Ready: a status of 200-399 within a second is Ready,
	// anything else is not, from one check to the next (a kubelet's httpGet
	// probe with failureThreshold 1). The pod's own probes are ignored.
	// Default: "/readyz".
	ReadinessPath string

	// ReadinessPeriod is how often readiness is checked, and how often a
	// failed status update is retried. Default: 500ms.
	ReadinessPeriod time.Duration

	// WebhookPorts pins the webhook port of some pods, by pod name: with no
	// Service network, a webhook configuration can only name one fixed
	// loopback URL, so one member must listen there. Default: none; every
	// pod gets a free port.
	WebhookPorts map[string]int

	// RestartBackoff is how long the runner waits before it restarts a
	// process that exited, whatever its exit code (restartPolicy Always).
	// Unlike a kubelet's it does not grow, so that tests can predict when a
	// fenced member is back. Default: 1s.
	RestartBackoff time.Duration
}

// applyDefaults checks the required fields and fills in every unset one. It
// creates the temporary LogDir.
func applyDefaults(opts Options) (Options, error) {
	if opts.Client == nil {
		return opts, errors.New("podrunner: Options.Client is required")
	}
	if opts.Binary == "" {
		return opts, errors.New("podrunner: Options.Binary is required")
	}
	if _, err := os.Stat(opts.Binary); err != nil {
		return opts, fmt.Errorf("podrunner: checking the binary: %w", err)
	}
	if opts.Selector == nil {
		opts.Selector = labels.Everything()
	}
	if opts.LogDir == "" {
		dir, err := os.MkdirTemp("", "podrunner-")
		if err != nil {
			return opts, fmt.Errorf("podrunner: creating the log folder: %w", err)
		}
		opts.LogDir = dir
	} else if err := os.MkdirAll(opts.LogDir, 0o755); err != nil {
		return opts, fmt.Errorf("podrunner: creating the log folder: %w", err)
	}
	if opts.NodeName == "" {
		opts.NodeName = "local"
	}
	if opts.ReadinessPath == "" {
		opts.ReadinessPath = "/readyz"
	}
	if opts.ReadinessPeriod == 0 {
		opts.ReadinessPeriod = 500 * time.Millisecond
	}
	if opts.RestartBackoff == 0 {
		opts.RestartBackoff = time.Second
	}
	return opts, nil
}
