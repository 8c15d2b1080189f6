package localcluster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"

	"github.com/kubeshard/kubeshard/test/localcluster"
	"github.com/kubeshard/kubeshard/test/podrunner"
)

const (
	namespace = "sleepers"
	stsName   = "sleeper"
	timeout   = 30 * time.Second
)

// record is what the sleeper writes at start (see its main.go).
type record struct {
	PodName      string   `json:"podName"`
	PodNamespace string   `json:"podNamespace"`
	PID          int      `json:"pid"`
	Args         []string `json:"args"`
	Kubeconfig   string   `json:"kubeconfig"`
	HealthPort   string   `json:"healthPort"`
	Greeting     string   `json:"greeting"`
	FieldRefName string   `json:"fieldRefName"`
}

// TestStatefulSetPodsRunAsProcesses runs a StatefulSet's pods as processes
// and checks what an end-to-end test of an operator relies on: every pod has
// a process that knows its name, pods become Ready, scaling starts and stops
// processes gracefully, a crashed process comes back, and nothing outlives
// the test.
func TestStatefulSetPodsRunAsProcesses(t *testing.T) {
	ctx := testContext(t)
	cluster := startCluster(ctx, t)
	sleeper := buildSleeper(ctx, t)
	out := t.TempDir()
	cs, err := kubernetes.NewForConfig(cluster.Config)
	if err != nil {
		t.Fatal(err)
	}

	if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: namespace}},
		metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	runnerOpts := podrunner.Options{
		Client:     cs,
		Namespace:  namespace,
		Selector:   labels.SelectorFromSet(labels.Set{"app": stsName}),
		Binary:     sleeper,
		Kubeconfig: cluster.KubeconfigPath,
		LogDir:     t.TempDir(),
	}
	runner, stopRunner := startRunner(ctx, t, runnerOpts)

	sts := statefulSet(out)
	if _, err := cs.AppsV1().StatefulSets(namespace).Create(ctx, sts, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}

	// Two processes with the right identity, two Ready pods.
	waitReadyReplicas(ctx, t, cs, 2)
	for _, pod := range []string{"sleeper-0", "sleeper-1"} {
		checkProcess(t, runner, out, pod, cluster.KubeconfigPath)
	}
	kubectlPods := func() string {
		got, err := cluster.Kubectl(ctx, "get", "pods", "-n", namespace, "-o",
			`jsonpath={range .items[*]}{.metadata.name} {.status.phase} {.status.conditions[?(@.type=="Ready")].status} {.spec.nodeName} {.status.podIP}{"\n"}{end}`)
		if err != nil {
			t.Fatal(err)
		}
		return string(got)
	}
	if got, want := kubectlPods(), "sleeper-0 Running True local 127.0.0.1\nsleeper-1 Running True local 127.0.0.1\n"; got != want {
		t.Fatalf("kubectl get pods:\n%s\nwant:\n%s", got, want)
	}

	// Scale out: a third process.
	scale(ctx, t, cs, 3)
	waitReadyReplicas(ctx, t, cs, 3)
	checkProcess(t, runner, out, "sleeper-2", cluster.KubeconfigPath)

	// Scale in: two processes get SIGTERM and exit, their pods disappear.
	pid1, _ := runner.PID("sleeper-1")
	pid2, _ := runner.PID("sleeper-2")
	scale(ctx, t, cs, 1)
	eventually(ctx, t, timeout, "Scaled-in pods are gone", func(ctx context.Context) error {
		for _, pod := range []string{"sleeper-1", "sleeper-2"} {
			if _, err := cs.CoreV1().Pods(namespace).Get(ctx, pod, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
				return fmt.Errorf("pod %s still exists (%w)", pod, err)
			}
		}
		return nil
	})
	waitReadyReplicas(ctx, t, cs, 1)
	for pod, pid := range map[string]int{"sleeper-1": pid1, "sleeper-2": pid2} {
		if _, err := os.Stat(filepath.Join(out, pod+"."+strconv.Itoa(pid)+".exit")); err != nil {
			t.Errorf("pod %s: the process did not exit on SIGTERM: %v", pod, err)
		}
		checkGone(t, pod, pid)
	}

	// kill -9: the runner restarts the process and counts the restart.
	pid0, ok := runner.PID("sleeper-0")
	if !ok {
		t.Fatal("no process for sleeper-0")
	}
	if err := runner.Signal("sleeper-0", syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	eventually(ctx, t, timeout, "Killed process restarted and Ready", func(ctx context.Context) error {
		pod, err := cs.CoreV1().Pods(namespace).Get(ctx, "sleeper-0", metav1.GetOptions{})
		if err != nil {
			return err
		}
		if len(pod.Status.ContainerStatuses) != 1 {
			return errors.New("no container status")
		}
		st := pod.Status.ContainerStatuses[0]
		if st.RestartCount != 1 || !st.Ready {
			return fmt.Errorf("restartCount %d, ready %t", st.RestartCount, st.Ready)
		}
		if term := st.LastTerminationState.Terminated; term == nil || term.ExitCode != 137 {
			return fmt.Errorf("last termination %+v, want exit code 137", term)
		}
		return nil
	})
	checkGone(t, "sleeper-0 (killed)", pid0)
	checkProcess(t, runner, out, "sleeper-0", cluster.KubeconfigPath)
	waitReadyReplicas(ctx, t, cs, 1)

	// SIGSTOP: the frozen process fails its readiness checks; SIGCONT: back.
	if err := runner.Signal("sleeper-0", syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	waitPodReady(ctx, t, cs, "sleeper-0", corev1.ConditionFalse)
	if err := runner.Signal("sleeper-0", syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	waitPodReady(ctx, t, cs, "sleeper-0", corev1.ConditionTrue)

	// kubectl delete: SIGTERM, the pod goes, the StatefulSet recreates it and
	// the new pod gets a new process.
	pid0, _ = runner.PID("sleeper-0")
	if _, err := cluster.Kubectl(ctx, "delete", "pod", "-n", namespace, "sleeper-0"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(out, "sleeper-0."+strconv.Itoa(pid0)+".exit")); err != nil {
		t.Errorf("sleeper-0 did not exit on SIGTERM when its pod was deleted: %v", err)
	}
	checkGone(t, "sleeper-0 (deleted)", pid0)
	waitNewProcess(ctx, t, cs, runner, "sleeper-0", pid0)
	checkProcess(t, runner, out, "sleeper-0", cluster.KubeconfigPath)

	// kubectl delete --force: the pod object goes at once, so the process is
	// killed without a grace period.
	pid0, _ = runner.PID("sleeper-0")
	if _, err := cluster.Kubectl(ctx, "delete", "pod", "-n", namespace, "sleeper-0", "--grace-period=0", "--force"); err != nil {
		t.Fatal(err)
	}
	eventually(ctx, t, timeout, "Force-deleted pod's process killed", func(context.Context) error {
		if err := syscall.Kill(pid0, 0); !errors.Is(err, syscall.ESRCH) {
			return fmt.Errorf("process %d still exists (kill -0: %w)", pid0, err)
		}
		return nil
	})
	if _, err := os.Stat(filepath.Join(out, "sleeper-0."+strconv.Itoa(pid0)+".exit")); err == nil {
		t.Errorf("sleeper-0 got SIGTERM after a forced deletion, want SIGKILL")
	}
	waitNewProcess(ctx, t, cs, runner, "sleeper-0", pid0)
	checkProcess(t, runner, out, "sleeper-0", cluster.KubeconfigPath)
	waitReadyReplicas(ctx, t, cs, 1)

	// Stopping the runner stops the processes with SIGTERM and leaves the
	// pods; a new runner adopts them.
	pid0, _ = runner.PID("sleeper-0")
	stopRunner()
	if _, err := os.Stat(filepath.Join(out, "sleeper-0."+strconv.Itoa(pid0)+".exit")); err != nil {
		t.Errorf("sleeper-0 did not exit on SIGTERM when the runner stopped: %v", err)
	}
	checkGone(t, "sleeper-0 (runner stopped)", pid0)
	runner, stopRunner = startRunner(ctx, t, runnerOpts)
	waitNewProcess(ctx, t, cs, runner, "sleeper-0", pid0)
	checkProcess(t, runner, out, "sleeper-0", cluster.KubeconfigPath)

	// Deleting the namespace deletes the StatefulSet and its pods (namespace
	// controller and garbage collector), and the runner lets them go.
	pid0, _ = runner.PID("sleeper-0")
	if err := cs.CoreV1().Namespaces().Delete(ctx, namespace, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(ctx, t, timeout, "Namespace deleted", func(ctx context.Context) error {
		if _, err := cs.CoreV1().Namespaces().Get(ctx, namespace, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
			return fmt.Errorf("namespace still exists (%w)", err)
		}
		return nil
	})
	if _, err := os.Stat(filepath.Join(out, "sleeper-0."+strconv.Itoa(pid0)+".exit")); err != nil {
		t.Errorf("sleeper-0 did not exit on SIGTERM when its namespace was deleted: %v", err)
	}
	checkGone(t, "sleeper-0 (namespace deleted)", pid0)

	// Stopping the cluster leaves no process behind.
	pids := map[localcluster.Component]int{}
	for _, c := range []localcluster.Component{localcluster.Etcd, localcluster.APIServer, localcluster.ControllerManager} {
		pid, ok := cluster.PID(c)
		if !ok {
			t.Fatalf("%s is not running", c)
		}
		pids[c] = pid
	}
	stopRunner()
	start := time.Now()
	if err := cluster.Stop(); err != nil {
		t.Errorf("stopping the cluster: %v", err)
	}
	t.Logf("Cluster stopped in %s", time.Since(start).Round(time.Millisecond))
	for c, pid := range pids {
		checkGone(t, string(c), pid)
	}
}

// startRunner runs a podrunner until the returned function is called or the
// test ends (its cleanup runs before the cluster's, registered earlier).
func startRunner(ctx context.Context, t *testing.T, opts podrunner.Options) (*podrunner.Runner, func()) {
	t.Helper()
	runner, err := podrunner.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- runner.Run(ctx) }()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("running pods: %v", err)
			}
		})
	}
	t.Cleanup(func() {
		stop()
		logTails(t, opts.LogDir)
	})
	return runner, stop
}

func statefulSet(out string) *appsv1.StatefulSet {
	labels := map[string]string{"app": stsName}
	return &appsv1.StatefulSet{
		ObjectMeta: metav1.ObjectMeta{Name: stsName, Namespace: namespace},
		Spec: appsv1.StatefulSetSpec{
			Replicas:            ptr.To[int32](2),
			PodManagementPolicy: appsv1.ParallelPodManagement,
			ServiceName:         stsName,
			Selector:            &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: corev1.PodSpec{
					// The namespace controller rechecks a namespace whose pods are
					// terminating after their grace period; short keeps the test short.
					TerminationGracePeriodSeconds: ptr.To[int64](3),
					Containers: []corev1.Container{{
						Name:  "sleeper",
						Image: "local",
						Args:  []string{"--out=" + out, "--health-port=$(HEALTH_PORT)"},
						Env: []corev1.EnvVar{
							{Name: "GREETING", Value: "hello from $(POD_NAME)"},
							{Name: "MY_POD_NAME", ValueFrom: &corev1.EnvVarSource{
								FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.name"},
							}},
						},
					}},
				},
			},
		},
	}
}

func scale(ctx context.Context, t *testing.T, cs kubernetes.Interface, replicas int) {
	t.Helper()
	patch := fmt.Appendf(nil, `{"spec":{"replicas":%d}}`, replicas)
	if _, err := cs.AppsV1().StatefulSets(namespace).Patch(ctx, stsName, types.MergePatchType, patch,
		metav1.PatchOptions{}, "scale"); err != nil {
		t.Fatalf("scaling to %d: %v", replicas, err)
	}
}

// waitReadyReplicas waits until the StatefulSet reports exactly n pods, all
// ready, which is what `kubectl rollout status` and operators look at.
func waitReadyReplicas(ctx context.Context, t *testing.T, cs kubernetes.Interface, n int32) {
	t.Helper()
	eventually(ctx, t, timeout, fmt.Sprintf("StatefulSet has %d ready replicas", n), func(ctx context.Context) error {
		sts, err := cs.AppsV1().StatefulSets(namespace).Get(ctx, stsName, metav1.GetOptions{})
		if err != nil {
			return err
		}
		if st := sts.Status; st.Replicas != n || st.ReadyReplicas != n {
			return fmt.Errorf("replicas %d, readyReplicas %d", st.Replicas, st.ReadyReplicas)
		}
		return nil
	})
}

// waitNewProcess waits until a recreated pod has a process other than
// oldPID and the pod's status reports that process Ready. The status must
// name the process: a pod adopted by a new runner still shows its old
// process's Ready=True until the runner's first status write.
func waitNewProcess(ctx context.Context, t *testing.T, cs kubernetes.Interface, runner *podrunner.Runner, pod string, oldPID int) {
	t.Helper()
	var pid int
	eventually(ctx, t, timeout, fmt.Sprintf("Recreated pod %s has a new process", pod), func(context.Context) error {
		var ok bool
		if pid, ok = runner.PID(pod); !ok || pid == oldPID {
			return fmt.Errorf("pid %d (running %t)", pid, ok)
		}
		return nil
	})
	want := fmt.Sprintf("podrunner://%d", pid)
	eventually(ctx, t, timeout, fmt.Sprintf("Pod %s reports process %d Ready", pod, pid), func(ctx context.Context) error {
		p, err := cs.CoreV1().Pods(namespace).Get(ctx, pod, metav1.GetOptions{})
		if err != nil {
			return err
		}
		if len(p.Status.ContainerStatuses) == 0 {
			return fmt.Errorf("no container status")
		}
		if st := p.Status.ContainerStatuses[0]; st.ContainerID != want || !st.Ready {
			return fmt.Errorf("container %s, ready %t", st.ContainerID, st.Ready)
		}
		return nil
	})
	waitPodReady(ctx, t, cs, pod, corev1.ConditionTrue)
}

// waitPodReady waits until the pod's Ready condition has the status.
func waitPodReady(ctx context.Context, t *testing.T, cs kubernetes.Interface, pod string, status corev1.ConditionStatus) {
	t.Helper()
	eventually(ctx, t, timeout, fmt.Sprintf("Pod %s has Ready=%s", pod, status), func(ctx context.Context) error {
		p, err := cs.CoreV1().Pods(namespace).Get(ctx, pod, metav1.GetOptions{})
		if err != nil {
			return err
		}
		for _, c := range p.Status.Conditions {
			if c.Type == corev1.PodReady && c.Status == status {
				return nil
			}
		}
		return fmt.Errorf("conditions %+v", p.Status.Conditions)
	})
}

// checkProcess checks that the pod's process runs and was started with the
// pod's identity: POD_NAME and POD_NAMESPACE, KUBECONFIG, the container's
// literal and fieldRef env, and $(HEALTH_PORT) expanded in its args.
func checkProcess(t *testing.T, runner *podrunner.Runner, out, pod, kubeconfig string) {
	t.Helper()
	pid, ok := runner.PID(pod)
	if !ok {
		t.Fatalf("pod %s has no process", pod)
	}
	data, err := os.ReadFile(filepath.Join(out, pod+"."+strconv.Itoa(pid)+".json"))
	if err != nil {
		t.Fatalf("pod %s: the process did not write its record: %v", pod, err)
	}
	var got record
	if err := json.Unmarshal(data, &got); err != nil {
		t.Fatal(err)
	}
	ports, _ := runner.Ports(pod)
	want := record{
		PodName:      pod,
		PodNamespace: namespace,
		PID:          pid,
		Args:         []string{"--out=" + out, "--health-port=" + strconv.Itoa(ports.Health)},
		Kubeconfig:   kubeconfig,
		HealthPort:   strconv.Itoa(ports.Health),
		Greeting:     "hello from " + pod,
		FieldRefName: pod,
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("pod %s: process started with\n%+v\nwant\n%+v", pod, got, want)
	}
}

// checkGone checks that no process has the pid any more.
func checkGone(t *testing.T, name string, pid int) {
	t.Helper()
	if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
		t.Errorf("%s: process %d still exists (kill -0: %v)", name, pid, err)
	}
}
