package podrunner

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
)

// localIP is the pod IP, host IP and the address of every port: all pods share
// the test machine's loopback interface.
const localIP = "127.0.0.1"

// containerRecord is what a worker knows about the container it runs, from
// which it writes the pod's status.
type containerRecord struct {
	scheduled       time.Time // when the pod was bound, the pod's startTime
	running         bool
	ready           bool
	startedAt       time.Time
	containerID     string
	restarts        int32 // processes started after the first
	everStarted     bool
	lastTermination *corev1.ContainerStateTerminated
	waiting         *corev1.ContainerStateWaiting
	transitions     map[corev1.PodConditionType]transition
}

// transition remembers when a condition last changed, for lastTransitionTime.
type transition struct {
	status corev1.ConditionStatus
	at     metav1.Time
}

func newContainerRecord() containerRecord {
	return containerRecord{
		scheduled:   time.Now(),
		waiting:     &corev1.ContainerStateWaiting{Reason: "ContainerCreating"},
		transitions: map[corev1.PodConditionType]transition{},
	}
}

func (c *containerRecord) started(p *process) {
	if c.everStarted {
		c.restarts++
	}
	c.everStarted = true
	c.running, c.ready = true, false
	c.startedAt = p.startedAt
	c.containerID = containerID(p.pid())
	c.waiting = nil
}

func (c *containerRecord) exited(p *process) {
	c.running, c.ready = false, false
	c.lastTermination = p.terminated(c.containerID)
	c.waiting = &corev1.ContainerStateWaiting{
		Reason:  "CrashLoopBackOff",
		Message: "podrunner restarts the process after its backoff: " + p.exitDescription(),
	}
}

func (c *containerRecord) startFailed(err error) {
	now := metav1.Now()
	c.running, c.ready = false, false
	c.lastTermination = &corev1.ContainerStateTerminated{
		ExitCode: 128, Reason: "StartError", Message: err.Error(), StartedAt: now, FinishedAt: now,
	}
	c.waiting = &corev1.ContainerStateWaiting{Reason: "RunContainerError", Message: err.Error()}
}

func (c *containerRecord) setReady(ready bool) { c.ready = ready && c.running }

func containerID(pid int) string { return fmt.Sprintf("podrunner://%d", pid) }

// condition returns a pod condition with the time of its last change.
func (c *containerRecord) condition(t corev1.PodConditionType, ok bool, reason, message string) corev1.PodCondition {
	status := corev1.ConditionFalse
	if ok {
		status = corev1.ConditionTrue
		reason, message = "", ""
	}
	tr, seen := c.transitions[t]
	if !seen || tr.status != status {
		tr = transition{status: status, at: metav1.Now()}
		c.transitions[t] = tr
	}
	return corev1.PodCondition{Type: t, Status: status, LastTransitionTime: tr.at, Reason: reason, Message: message}
}

// podStatus is the status a kubelet would report for a pod with one container
// in the recorded state (other containers are not run and not reported).
func (c *containerRecord) podStatus(container *corev1.Container, imageID string) corev1.PodStatus {
	notReady := fmt.Sprintf("containers with unready status: [%s]", container.Name)
	cs := corev1.ContainerStatus{
		Name:         container.Name,
		Image:        container.Image,
		ImageID:      imageID,
		ContainerID:  c.containerID,
		Ready:        c.ready,
		Started:      ptr.To(c.running),
		RestartCount: c.restarts,
	}
	switch {
	case c.running:
		cs.State.Running = &corev1.ContainerStateRunning{StartedAt: metav1.NewTime(c.startedAt)}
	default:
		cs.State.Waiting = c.waiting
	}
	if c.lastTermination != nil {
		cs.LastTerminationState.Terminated = c.lastTermination
	}
	phase := corev1.PodPending
	if c.everStarted {
		// restartPolicy Always: a pod whose container is between two runs is
		// still Running.
		phase = corev1.PodRunning
	}
	return corev1.PodStatus{
		Phase:     phase,
		HostIP:    localIP,
		HostIPs:   []corev1.HostIP{{IP: localIP}},
		PodIP:     localIP,
		PodIPs:    []corev1.PodIP{{IP: localIP}},
		StartTime: ptr.To(metav1.NewTime(c.scheduled)),
		Conditions: []corev1.PodCondition{
			c.condition(corev1.PodReadyToStartContainers, true, "", ""),
			c.condition(corev1.PodInitialized, true, "", ""),
			c.condition(corev1.ContainersReady, c.ready, "ContainersNotReady", notReady),
			c.condition(corev1.PodReady, c.ready, "ContainersNotReady", notReady),
			c.condition(corev1.PodScheduled, true, "", ""),
		},
		ContainerStatuses: []corev1.ContainerStatus{cs},
	}
}

// writeStatus writes the pod's status if it changed since the last write. A
// failed write is retried at the next tick. The patch names the pod's UID,
// as a kubelet's does, so that it fails instead of writing the status of a
// pod recreated under the same name.
func (w *podWorker) writeStatus(ctx context.Context, pod *corev1.Pod) {
	if !w.bound || len(pod.Spec.Containers) == 0 {
		return
	}
	status := w.status.podStatus(&pod.Spec.Containers[0], "podrunner://"+w.r.opts.Binary)
	if w.lastStatus != nil && equality.Semantic.DeepEqual(*w.lastStatus, status) {
		return
	}
	patch, err := json.Marshal(map[string]any{
		"metadata": map[string]any{"uid": w.uid},
		"status":   status,
	})
	if err != nil {
		w.log.Error(err, "Failed to encode pod status")
		return
	}
	// A merge patch replaces conditions and containerStatuses whole, which is
	// what a runner that owns them wants.
	_, err = w.r.opts.Client.CoreV1().Pods(w.namespace).Patch(ctx, w.name, types.MergePatchType, patch,
		metav1.PatchOptions{}, "status")
	switch {
	case err == nil:
		w.lastStatus = &status
		w.log.V(1).Info("Updated pod status", "phase", status.Phase, "ready", w.status.ready,
			"restartCount", w.status.restarts)
	case ctx.Err() != nil, apierrors.IsNotFound(err):
	default:
		w.log.Error(err, "Failed to update pod status, retrying")
	}
}
