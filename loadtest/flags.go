package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/klog/v2"
	"sigs.k8s.io/controller-runtime/pkg/client"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"

	"github.com/kubeshard/kubeshard/internal/testenv"
	"github.com/kubeshard/kubeshard/loadtest/internal/workload"
)

func newFlagSet(name, about string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "%s\n\nUsage: loadtest %s [flags]\n\n", about, name)
		fs.PrintDefaults()
	}
	return fs
}

// clientFlags say which cluster and how fast the harness may talk to it.
type clientFlags struct {
	kubeconfig string
	qps        float64
	burst      int
}

func (f *clientFlags) register(fs *flag.FlagSet, kubeconfigHelp string) {
	fs.StringVar(&f.kubeconfig, "kubeconfig", "", kubeconfigHelp)
	fs.Float64Var(&f.qps, "kube-api-qps", 1000, "Client-side rate limit of the harness's API requests per second; -1 for none. (client-go's default, 5, would measure the client, not the cluster.)")
	fs.IntVar(&f.burst, "kube-api-burst", 2000, "Client-side burst of API requests.")
}

func (f *clientFlags) validate() error {
	if f.qps == 0 || f.qps < -1 || (f.qps > 0 && f.burst < 1) {
		return fmt.Errorf("--kube-api-qps must be positive or -1 (no limit), and --kube-api-burst at least 1; 0 would silently mean client-go's 5 per second")
	}
	return nil
}

// apply sets the rate limits on cfg.
func (f *clientFlags) apply(cfg *rest.Config) *rest.Config {
	cfg = rest.CopyConfig(cfg)
	cfg.QPS, cfg.Burst = float32(f.qps), f.burst
	return cfg
}

// config loads --kubeconfig, or $KUBECONFIG.
func (f *clientFlags) config() (*rest.Config, error) {
	if err := f.validate(); err != nil {
		return nil, err
	}
	path := f.kubeconfig
	if path == "" {
		path = os.Getenv("KUBECONFIG")
	}
	if path == "" {
		return nil, errors.New("no cluster: pass --kubeconfig (or set KUBECONFIG); `loadtest cluster` starts a local one and prints its kubeconfig, `loadtest run` starts its own")
	}
	cfg, err := clientcmd.BuildConfigFromFlags("", path)
	if err != nil {
		return nil, fmt.Errorf("loading the kubeconfig: %w", err)
	}
	return f.apply(cfg), nil
}

// clients returns a controller-runtime client and a clientset for the
// cluster of the flags.
func (f *clientFlags) clients() (client.WithWatch, kubernetes.Interface, error) {
	cfg, err := f.config()
	if err != nil {
		return nil, nil, err
	}
	return newClients(cfg)
}

func newClients(cfg *rest.Config) (client.WithWatch, kubernetes.Interface, error) {
	c, err := client.NewWithWatch(cfg, client.Options{Scheme: testenv.NewScheme()})
	if err != nil {
		return nil, nil, fmt.Errorf("creating a client: %w", err)
	}
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, nil, fmt.Errorf("creating a clientset: %w", err)
	}
	return c, cs, nil
}

// objectFlags say which objects.
type objectFlags struct {
	prefix     string
	namespaces int
	objects    int
}

func (f *objectFlags) register(fs *flag.FlagSet, objectsDefault int) {
	fs.StringVar(&f.prefix, "prefix", "loadtest", "Prefix of the run's namespaces (<prefix>-<i>) and value of its label loadtest.kubeshard.dev/run.")
	fs.IntVar(&f.namespaces, "namespaces", 10, "Namespaces the objects are spread over.")
	fs.IntVar(&f.objects, "objects", objectsDefault, "Number of LargeData objects (named ld-00000000 onwards).")
}

func (f *objectFlags) names() workload.Names {
	return workload.Names{Prefix: f.prefix, Namespaces: f.namespaces}
}

func (f *objectFlags) validate() error {
	if f.objects < 0 {
		return fmt.Errorf("--objects must not be negative, not %d", f.objects)
	}
	return f.names().Validate()
}

// writeFlags say how fast to write.
type writeFlags struct {
	concurrency int
	rate        float64
	items       int64
	batchSize   int
}

func (f *writeFlags) register(fs *flag.FlagSet) {
	fs.IntVar(&f.concurrency, "concurrency", 32, "Writes in flight at once.")
	fs.Float64Var(&f.rate, "rate", 0, "Target creates per second; 0 for as fast as --concurrency and --kube-api-qps allow.")
	fs.Int64Var(&f.items, "items", 100, "spec.items of every object (records in the store).")
	fs.IntVar(&f.batchSize, "batch-size", 500, "spec.batchSize of every object; with --items at most this, one reconcile per generation.")
}

func (f *writeFlags) validate() error {
	if f.concurrency < 1 || f.rate < 0 {
		return fmt.Errorf("--concurrency must be at least 1 (%d) and --rate not negative (%g)", f.concurrency, f.rate)
	}
	return f.spec().Validate()
}

func (f *writeFlags) spec() workload.Spec {
	return workload.Spec{Items: f.items, BatchSize: int32(f.batchSize)}
}

// scaleStep is one "REPLICAS@OFFSET" of a scale schedule.
type scaleStep struct {
	replicas int
	after    time.Duration
}

// parseSchedule reads "5@30s,4@2m": 5 replicas 30 s after the start, 4 after
// two minutes.
func parseSchedule(s string) ([]scaleStep, error) {
	if s == "" {
		return nil, nil
	}
	var steps []scaleStep
	for part := range strings.SplitSeq(s, ",") {
		r, at, ok := strings.Cut(strings.TrimSpace(part), "@")
		replicas, err1 := strconv.Atoi(r)
		after, err2 := time.ParseDuration(at)
		if !ok || err1 != nil || err2 != nil || replicas < 0 || after < 0 {
			return nil, fmt.Errorf("scale schedule %q: want REPLICAS@OFFSET[,REPLICAS@OFFSET...] such as 5@30s,4@2m", s)
		}
		if len(steps) > 0 && after < steps[len(steps)-1].after {
			return nil, fmt.Errorf("scale schedule %q: offsets must not decrease", s)
		}
		steps = append(steps, scaleStep{replicas: replicas, after: after})
	}
	return steps, nil
}

// setLogOutput sends the libraries' logs (controller-runtime, client-go) to
// w instead of between the progress bars.
func setLogOutput(w io.Writer) {
	logf.SetLogger(zap.New(zap.WriteTo(w)))
	klog.SetLogger(logf.Log)
}

func parse(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments: %s", strings.Join(fs.Args(), " "))
	}
	return nil
}
