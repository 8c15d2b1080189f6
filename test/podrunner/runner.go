package podrunner

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"syscall"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/tools/cache"
	"k8s.io/klog/v2"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
)

// Runner runs the pods that match its options as local processes. Create it
// with New, start it with Run; while it runs, PID, Signal and Ports reach a
// pod's process for fault tests.
type Runner struct {
	opts   Options
	client *http.Client // readiness checks

	mu      sync.Mutex
	ctx     context.Context // Run's; nil before Run
	log     logr.Logger
	workers map[types.UID]*podWorker
	wg      sync.WaitGroup
	stopped bool // Run is ending: no new workers
}

// Run runs the pods that match opts until ctx ends; see Runner.Run.
func Run(ctx context.Context, opts Options) error {
	r, err := New(opts)
	if err != nil {
		return err
	}
	return r.Run(ctx)
}

// New checks opts and returns a Runner that has not started.
func New(opts Options) (*Runner, error) {
	opts, err := applyDefaults(opts)
	if err != nil {
		return nil, err
	}
	return &Runner{
		opts: opts,
		// A new connection per check, as a kubelet does: a kept-alive one
		// would outlive the process it talked to.
		client:  &http.Client{Transport: &http.Transport{DisableKeepAlives: true}},
		workers: map[types.UID]*podWorker{},
	}, nil
}

// Run watches the pods and runs one process per pod until ctx ends. Then it
// stops every process it started (SIGTERM, and SIGKILL after the pod's
// termination grace period) and returns once all have exited. It leaves the
// pods as they are. Run may be called once.
func (r *Runner) Run(ctx context.Context) error {
	log := logf.FromContext(ctx).WithName("podrunner")
	r.mu.Lock()
	if r.ctx != nil {
		r.mu.Unlock()
		return errors.New("podrunner: Run called twice")
	}
	r.ctx, r.log = ctx, log
	r.mu.Unlock()

	factory := informers.NewSharedInformerFactoryWithOptions(r.opts.Client, 0,
		informers.WithNamespace(r.opts.Namespace),
		informers.WithTweakListOptions(func(o *metav1.ListOptions) { o.LabelSelector = r.opts.Selector.String() }))
	informer := factory.Core().V1().Pods().Informer()
	if _, err := informer.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    r.onPod,
		UpdateFunc: func(_, obj any) { r.onPod(obj) },
		DeleteFunc: r.onDelete,
	}); err != nil {
		return fmt.Errorf("podrunner: watching pods: %w", err)
	}
	log.Info("Running pods", "namespace", r.opts.Namespace, "selector", r.opts.Selector.String(),
		"binary", r.opts.Binary, "logDir", r.opts.LogDir)
	factory.Start(ctx.Done())
	<-ctx.Done()
	factory.Shutdown()

	r.mu.Lock()
	r.stopped = true
	r.mu.Unlock()
	r.wg.Wait()
	log.Info("Stopped running pods")
	return nil
}

// onPod starts a worker for a pod the runner should run and has no worker for
// yet, and tells an existing worker that its pod changed.
func (r *Runner) onPod(obj any) {
	pod, ok := obj.(*corev1.Pod)
	if !ok {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if w, ok := r.workers[pod.UID]; ok {
		w.update(pod, false)
		return
	}
	if r.stopped || !r.wants(pod) {
		return
	}
	w, err := newPodWorker(r, pod)
	if err != nil {
		r.log.Error(err, "Cannot run pod", "pod", klog.KObj(pod))
		return
	}
	r.workers[pod.UID] = w
	r.wg.Go(func() {
		w.run(r.ctx)
		r.mu.Lock()
		delete(r.workers, pod.UID)
		r.mu.Unlock()
	})
}

// wants says whether a pod is the runner's to run: not finished, and not bound
// to another node.
func (r *Runner) wants(pod *corev1.Pod) bool {
	if pod.Status.Phase == corev1.PodSucceeded || pod.Status.Phase == corev1.PodFailed {
		return false
	}
	return pod.Spec.NodeName == "" || pod.Spec.NodeName == r.opts.NodeName
}

// onDelete tells the worker of a pod that the pod object is gone, so that it
// kills the process at once, as a kubelet does for a force-deleted pod.
func (r *Runner) onDelete(obj any) {
	if tombstone, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = tombstone.Obj
	}
	pod, ok := obj.(*corev1.Pod)
	if !ok {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if w, ok := r.workers[pod.UID]; ok {
		w.update(pod, true)
	}
}

// worker returns the worker of the pod named name. A name can have two
// workers for a moment (a pod deleted and recreated by its StatefulSet); the
// one with a running process is the one a test means.
func (r *Runner) worker(namespace, name string) *podWorker {
	r.mu.Lock()
	defer r.mu.Unlock()
	var found *podWorker
	for _, w := range r.workers {
		if w.name != name || (namespace != "" && w.namespace != namespace) {
			continue
		}
		if found == nil || w.pid() != 0 {
			found = w
		}
	}
	return found
}

// splitName accepts "name" or "namespace/name".
func splitName(pod string) (namespace, name string) {
	if namespace, name, ok := strings.Cut(pod, "/"); ok {
		return namespace, name
	}
	return "", pod
}

// PID returns the process id of a pod's process ("name" or
// "namespace/name"), or false while it has none (not started yet, waiting to
// restart, or stopped).
func (r *Runner) PID(pod string) (int, bool) {
	w := r.worker(splitName(pod))
	if w == nil {
		return 0, false
	}
	pid := w.pid()
	return pid, pid != 0
}

// Signal sends sig to a pod's process (and to anything it forked): SIGKILL to
// crash it, SIGSTOP and SIGCONT to freeze it. The runner treats the result as
// it would treat the same thing happening on its own: a killed process is
// restarted, a frozen one fails its readiness checks. A process left frozen
// cannot act on SIGTERM, so stopping it takes the pod's whole grace period
// before the SIGKILL.
func (r *Runner) Signal(pod string, sig syscall.Signal) error {
	w := r.worker(splitName(pod))
	if w == nil {
		return fmt.Errorf("podrunner: signalling pod %s: the runner has no such pod", pod)
	}
	return w.signal(sig)
}

// Ports are the loopback ports of one pod, also in its environment.
type Ports struct {
	Metrics, Health, Webhook int
}

// Ports returns the ports the runner allocated to a pod.
func (r *Runner) Ports(pod string) (Ports, bool) {
	w := r.worker(splitName(pod))
	if w == nil {
		return Ports{}, false
	}
	return w.ports, true
}

// LogDir returns the folder of the processes' log files.
func (r *Runner) LogDir() string { return r.opts.LogDir }
