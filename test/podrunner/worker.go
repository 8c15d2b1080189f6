package podrunner

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/klog/v2"
	"k8s.io/utils/ptr"
)

// podWorker runs the process of one pod (one UID) for the pod's lifetime: it
// binds the pod, starts the process, restarts it when it exits, reports the
// status and, when the pod is deleted, stops the process and removes the pod.
// Everything but the fields under mu belongs to the run goroutine.
type podWorker struct {
	r         *Runner
	log       logr.Logger
	uid       types.UID
	namespace string
	name      string
	ports     Ports

	mu     sync.Mutex
	pod    *corev1.Pod // latest seen
	gone   bool        // the pod object was deleted
	proc   *process    // the running process, or nil
	notify chan struct{}

	bound      bool
	status     containerRecord
	lastStatus *corev1.PodStatus // last status written, to write only changes
}

func newPodWorker(r *Runner, pod *corev1.Pod) (*podWorker, error) {
	ports, err := freePorts(3)
	if err != nil {
		return nil, err
	}
	if fixed, ok := r.opts.WebhookPorts[pod.Name]; ok {
		ports[2] = fixed
	}
	return &podWorker{
		ports:     Ports{Metrics: ports[0], Health: ports[1], Webhook: ports[2]},
		r:         r,
		log:       r.log.WithValues("pod", klog.KObj(pod)),
		uid:       pod.UID,
		namespace: pod.Namespace,
		name:      pod.Name,
		pod:       pod,
		notify:    make(chan struct{}, 1),
		bound:     pod.Spec.NodeName != "",
		status:    newContainerRecord(),
	}, nil
}

// update records the latest state of the pod and wakes the worker. It never
// blocks, because it runs in the informer's event handler.
func (w *podWorker) update(pod *corev1.Pod, gone bool) {
	w.mu.Lock()
	w.pod = pod
	w.gone = w.gone || gone
	w.mu.Unlock()
	select {
	case w.notify <- struct{}{}:
	default:
	}
}

func (w *podWorker) snapshot() (*corev1.Pod, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.pod, w.gone
}

func (w *podWorker) current() *process {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.proc
}

func (w *podWorker) setCurrent(p *process) {
	w.mu.Lock()
	w.proc = p
	w.mu.Unlock()
}

func (w *podWorker) pid() int {
	if p := w.current(); p != nil && !p.exited() {
		return p.pid()
	}
	return 0
}

func (w *podWorker) signal(sig syscall.Signal) error {
	p := w.current()
	if p == nil || p.exited() {
		return fmt.Errorf("podrunner: signalling pod %s: no process is running", w.name)
	}
	w.log.Info("Signalling process", "pid", p.pid(), "signal", signalName(sig))
	if err := p.signal(sig); err != nil {
		return fmt.Errorf("podrunner: signalling pod %s: %w", w.name, err)
	}
	return nil
}

// run is the worker's loop. It returns when the pod is gone, or when ctx ends
// and the process has been stopped.
func (w *podWorker) run(ctx context.Context) {
	ticker := time.NewTicker(w.r.opts.ReadinessPeriod)
	defer ticker.Stop()
	var restartAt time.Time
	for {
		pod, gone := w.snapshot()
		switch {
		case gone:
			w.stop(0)
			return
		case ctx.Err() != nil:
			w.stop(gracePeriod(pod))
			return
		case pod.DeletionTimestamp != nil:
			w.terminate(ctx, pod)
			return
		case pod.Spec.NodeName != "" && pod.Spec.NodeName != w.r.opts.NodeName:
			// Bound elsewhere before this worker could bind it: not ours.
			w.stop(0)
			return
		}
		w.bound = w.bound || pod.Spec.NodeName != ""

		if !w.bound {
			w.bind(ctx)
		}
		proc := w.current()
		if w.bound && proc == nil && !time.Now().Before(restartAt) {
			proc = w.start(pod)
		}
		w.writeStatus(ctx, pod)

		var exited <-chan struct{}
		if proc != nil {
			exited = proc.done
		}
		select {
		case <-ctx.Done():
		case <-w.notify:
		case <-exited:
			w.exited(proc)
			restartAt = time.Now().Add(w.r.opts.RestartBackoff)
		case <-ticker.C:
			if proc != nil && w.status.running {
				if ready := w.ready(ctx); ready != w.status.ready {
					w.log.Info("Readiness changed", "pid", proc.pid(), "ready", ready)
					w.status.setReady(ready)
				}
			}
		}
	}
}

// bind assigns the pod to the runner's node, as the scheduler would. The
// binding carries the UID, so a pod recreated under the same name is never
// bound by the worker of its predecessor.
func (w *podWorker) bind(ctx context.Context) {
	binding := &corev1.Binding{
		ObjectMeta: metav1.ObjectMeta{Name: w.name, Namespace: w.namespace, UID: w.uid},
		Target:     corev1.ObjectReference{Kind: "Node", Name: w.r.opts.NodeName},
	}
	err := w.r.opts.Client.CoreV1().Pods(w.namespace).Bind(ctx, binding, metav1.CreateOptions{})
	switch {
	case err == nil:
		w.log.V(1).Info("Bound pod", "node", w.r.opts.NodeName)
		w.bound = true
		w.status.scheduled = time.Now()
	case apierrors.IsNotFound(err) || apierrors.IsConflict(err):
		// Gone or bound meanwhile; the next event says which.
	default:
		w.log.Error(err, "Failed to bind pod, retrying")
	}
}

// start starts the pod's process; a failure to start counts as an exit, so
// that it is retried after the backoff.
func (w *podWorker) start(pod *corev1.Pod) *process {
	p, err := w.startProcess(pod)
	if err != nil {
		w.log.Error(err, "Failed to start process")
		w.status.startFailed(err)
		return nil
	}
	w.setCurrent(p)
	w.status.started(p)
	w.log.Info("Started process", "pid", p.pid(), "restartCount", w.status.restarts)
	return p
}

// exited records that the process exited on its own.
func (w *podWorker) exited(p *process) {
	w.setCurrent(nil)
	w.status.exited(p)
	w.log.Info("Process exited, restarting it", "pid", p.pid(), "exit", p.exitDescription(),
		"backoff", w.r.opts.RestartBackoff)
}

// stop stops the process, SIGTERM first and SIGKILL after grace (at once for
// a zero grace); a pod deleted outright meanwhile cuts the wait short.
func (w *podWorker) stop(grace time.Duration) {
	p := w.current()
	if p == nil || p.exited() {
		return
	}
	if grace > 0 {
		w.log.Info("Stopping process", "pid", p.pid(), "signal", signalName(syscall.SIGTERM), "gracePeriod", grace)
		_ = p.signal(syscall.SIGTERM)
		timer := time.NewTimer(grace)
		defer timer.Stop()
	wait:
		for {
			select {
			case <-p.done:
				w.log.Info("Process stopped", "pid", p.pid(), "exit", p.exitDescription())
				return
			case <-timer.C:
				break wait
			case <-w.notify:
				if _, gone := w.snapshot(); gone {
					break wait
				}
			}
		}
	}
	w.log.Info("Killing process", "pid", p.pid(), "signal", signalName(syscall.SIGKILL))
	_ = p.signal(syscall.SIGKILL)
	<-p.done
	w.log.Info("Process stopped", "pid", p.pid(), "exit", p.exitDescription())
}

// terminate handles a pod with a deletionTimestamp: it stops the process
// within the pod's grace period and then removes the pod object, which a
// kubelet does once the containers are gone and which the StatefulSet
// controller waits for before it creates the pod's replacement. A failed
// delete is retried until ctx ends.
func (w *podWorker) terminate(ctx context.Context, pod *corev1.Pod) {
	w.stop(gracePeriod(pod))
	for ctx.Err() == nil {
		err := w.r.opts.Client.CoreV1().Pods(w.namespace).Delete(ctx, w.name, metav1.DeleteOptions{
			GracePeriodSeconds: ptr.To[int64](0),
			Preconditions:      &metav1.Preconditions{UID: &w.uid},
		})
		switch {
		case err == nil:
			w.log.Info("Deleted pod")
			return
		case apierrors.IsNotFound(err) || apierrors.IsConflict(err):
			// Already gone (or replaced, which the UID precondition protects).
			return
		case ctx.Err() == nil:
			w.log.Error(err, "Failed to delete terminated pod, retrying")
		}
		select {
		case <-ctx.Done():
		case <-time.After(w.r.opts.ReadinessPeriod):
		}
	}
}

// gracePeriod is the time a process gets between SIGTERM and SIGKILL: the
// deletion's grace period if the pod is being deleted (kubectl delete
// --grace-period), else the pod's terminationGracePeriodSeconds.
func gracePeriod(pod *corev1.Pod) time.Duration {
	switch {
	case pod.DeletionGracePeriodSeconds != nil:
		return time.Duration(*pod.DeletionGracePeriodSeconds) * time.Second
	case pod.Spec.TerminationGracePeriodSeconds != nil:
		return time.Duration(*pod.Spec.TerminationGracePeriodSeconds) * time.Second
	default:
		return corev1.DefaultTerminationGracePeriodSeconds * time.Second
	}
}

// signalName names a signal for the logs: "terminated (15)", "killed (9)".
func signalName(sig syscall.Signal) string { return fmt.Sprintf("%s (%d)", sig, int(sig)) }

// readinessTimeout bounds one readiness check, as a kubelet's default probe
// timeoutSeconds does; a frozen process fails within it.
const readinessTimeout = time.Second

// ready checks readiness once.
func (w *podWorker) ready(ctx context.Context) bool {
	ctx, cancel := context.WithTimeout(ctx, readinessTimeout)
	defer cancel()
	url := "http://" + net.JoinHostPort(localIP, strconv.Itoa(w.ports.Health)) + w.r.opts.ReadinessPath
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return false
	}
	resp, err := w.r.client.Do(req)
	if err != nil {
		return false
	}
	_ = resp.Body.Close()
	return resp.StatusCode >= 200 && resp.StatusCode < 400
}
