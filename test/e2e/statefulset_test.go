package e2e

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	datav1alpha1 "github.com/kubeshard/kubeshard/api/data/v1alpha1"
	shardingv1alpha1 "github.com/kubeshard/kubeshard/api/sharding/v1alpha1"
	"github.com/kubeshard/kubeshard/internal/testenv"
	"github.com/kubeshard/kubeshard/internal/testpg"
	"github.com/kubeshard/kubeshard/pkg/membership"
	"github.com/kubeshard/kubeshard/test/localcluster"
	"github.com/kubeshard/kubeshard/test/podrunner"
)

// The full set's StatefulSet scenarios share one local control plane with
// kube-controller-manager (envtest has none, so no StatefulSet there),
// started by the first of them and stopped by TestMain.
var local struct {
	sync.Mutex
	cluster *localcluster.Cluster
	kinePG  *testpg.Server // with KUBESHARD_STORAGE=kine
	client  client.Client
	err     error
}

// localCluster returns the shared local cluster with the CRDs installed,
// starting it on first use.
func localCluster(t *testing.T) (*localcluster.Cluster, client.Client) {
	t.Helper()
	local.Lock()
	defer local.Unlock()
	if local.cluster == nil && local.err == nil {
		local.cluster, local.kinePG, local.client, local.err = startLocalCluster(t)
	}
	if local.err != nil {
		t.Fatal(local.err)
	}
	return local.cluster, local.client
}

func startLocalCluster(t *testing.T) (*localcluster.Cluster, *testpg.Server, client.Client, error) {
	// The cluster outlives this test: it must not stop with its context.
	ctx := context.WithoutCancel(t.Context())
	opts := localcluster.Options{FeatureGates: apiServerGates()}
	var kinePG *testpg.Server
	if os.Getenv(testenv.StorageEnv) == "kine" {
		var err error
		if kinePG, err = testpg.Start(ctx, testpg.Options{Database: "kine"}); err != nil {
			return nil, nil, nil, fmt.Errorf("starting PostgreSQL for kine: %w", err)
		}
		opts.KineDatabase = kinePG.URL()
	}
	cluster, err := localcluster.Start(ctx, opts)
	if err != nil {
		if kinePG != nil {
			err = errors.Join(err, kinePG.Stop())
		}
		return nil, nil, nil, err
	}
	root, err := testenv.ModuleRoot()
	if err != nil {
		return cluster, kinePG, nil, err
	}
	if _, err := envtest.InstallCRDs(cluster.Config, envtest.CRDInstallOptions{
		Paths: []string{filepath.Join(root, "deploy", "base", "crd")}, ErrorIfPathMissing: true,
	}); err != nil {
		return cluster, kinePG, nil, fmt.Errorf("installing the CRDs: %w", err)
	}
	c, err := client.New(cluster.Config, client.Options{Scheme: testenv.NewScheme()})
	return cluster, kinePG, c, err
}

// stopLocalCluster stops the shared cluster if a test started it.
func stopLocalCluster() error {
	local.Lock()
	defer local.Unlock()
	var errs []error
	if local.cluster != nil {
		errs = append(errs, local.cluster.Stop())
	}
	if local.kinePG != nil {
		errs = append(errs, local.kinePG.Stop())
	}
	return errors.Join(errs...)
}

const statefulSetName = "largedata-operator"

// operatorSet is the operator's StatefulSet in one namespace, its pods run
// as local processes by a podrunner.
type operatorSet struct {
	t       *testing.T
	cluster *localcluster.Cluster
	c       client.Client
	ns      string
	runner  *podrunner.Runner
	stop    context.CancelFunc
	stopped chan struct{}
}

// startOperatorSet creates the StatefulSet with replicas pods whose
// processes write their journals to journals/<pod>.jsonl, and runs its pods.
func startOperatorSet(t *testing.T, cluster *localcluster.Cluster, c client.Client, ns string, replicas int32, journals string) *operatorSet {
	t.Helper()
	selector := map[string]string{"app.kubernetes.io/name": statefulSetName}
	sts := &appsv1.StatefulSet{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: statefulSetName},
		Spec: appsv1.StatefulSetSpec{
			Replicas:    ptr.To(replicas),
			ServiceName: statefulSetName,
			// As deploy/base: members join independently, one rebalance for many.
			PodManagementPolicy: appsv1.ParallelPodManagement,
			Selector:            &metav1.LabelSelector{MatchLabels: selector},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: selector},
				Spec: corev1.PodSpec{
					TerminationGracePeriodSeconds: ptr.To[int64](60),
					Containers: []corev1.Container{{
						Name:  "manager",
						Image: "largedata-operator", // the runner runs the test's build instead
						Args: append([]string{
							"--store=memory",
							"--metrics-bind-address=0",
							"--health-probe-bind-address=127.0.0.1:$(HEALTH_PORT)",
							"--journal=" + filepath.Join(journals, "$(POD_NAME).jsonl"),
						}, logLevelArgs()...),
					}},
				},
			},
		},
	}
	if err := c.Create(t.Context(), sts); err != nil {
		t.Fatal(err)
	}
	cs, err := kubernetes.NewForConfig(cluster.Config)
	if err != nil {
		t.Fatal(err)
	}
	runner, err := podrunner.New(podrunner.Options{
		Client:     cs,
		Namespace:  ns,
		Selector:   labels.SelectorFromSet(selector),
		Binary:     operator,
		Kubeconfig: cluster.KubeconfigPath,
		LogDir:     logDir(t),
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, stop := context.WithCancel(context.WithoutCancel(t.Context()))
	s := &operatorSet{t: t, cluster: cluster, c: c, ns: ns, runner: runner, stop: stop, stopped: make(chan struct{})}
	go func() {
		defer close(s.stopped)
		if err := runner.Run(ctx); err != nil {
			t.Errorf("running the pods: %v", err)
		}
	}()
	t.Cleanup(func() {
		s.stopPods()
		if t.Failed() {
			s.logTails()
		}
	})
	return s
}

// members returns the names of the first n pods, the ring's members.
func members(n int) []string {
	var names []string
	for i := range n {
		names = append(names, statefulSetName+"-"+strconv.Itoa(i))
	}
	return names
}

// scale scales the StatefulSet through its scale subresource, as kubectl
// scale does.
func (s *operatorSet) scale(n int) {
	s.t.Helper()
	if out, err := s.cluster.Kubectl(s.t.Context(), "-n", s.ns, "scale", "statefulset/"+statefulSetName, "--replicas="+strconv.Itoa(n)); err != nil {
		s.t.Fatalf("%v\n%s", err, out)
	}
}

// runningPods reports whether exactly the named pods exist and have a
// process.
func (s *operatorSet) runningPods(names ...string) (bool, string) {
	pods := &corev1.PodList{}
	if err := s.c.List(s.t.Context(), pods, client.InNamespace(s.ns)); err != nil {
		return false, err.Error()
	}
	var got []string
	for _, p := range pods.Items {
		got = append(got, p.Name)
	}
	slices.Sort(got)
	if !slices.Equal(got, names) {
		return false, fmt.Sprintf("pods %v", got)
	}
	for _, name := range names {
		if _, ok := s.runner.PID(name); !ok {
			return false, name + " has no process"
		}
	}
	return true, ""
}

// stopPods stops every process (SIGTERM, as a node drain would), so that
// each writes its journal's tail, and waits for them.
func (s *operatorSet) stopPods() {
	s.stop()
	<-s.stopped
}

// coordinator returns the pod whose current process acquired the
// coordinator's Lease.
func (s *operatorSet) coordinator(pods []string) (string, bool) {
	for _, pod := range pods {
		log, err := os.ReadFile(filepath.Join(s.runner.LogDir(), pod+".log"))
		if err != nil {
			continue
		}
		// The log is appended across restarts: only the current run counts.
		if i := bytes.LastIndex(log, []byte("--- podrunner: started pid")); i >= 0 {
			log = log[i:]
		}
		if holdsCoordinatorLease(log, s.ns) {
			return pod, true
		}
	}
	return "", false
}

func (s *operatorSet) logTails() {
	logs, _ := filepath.Glob(filepath.Join(s.runner.LogDir(), "*.log"))
	for _, path := range logs {
		out, _ := os.ReadFile(path)
		s.t.Logf("%s:\n%s", filepath.Base(path), tail(out))
	}
}

// TestScaleOutAndInUnderLoad scales the operator's StatefulSet 1 -> 2 -> 4
// -> 2 -> 1 with kubectl scale on a local control plane whose
// kube-controller-manager creates and deletes the pods, while users keep
// creating and changing datasets. At each step the ring must settle on
// exactly the StatefulSet's pods; at the end every dataset is reconciled
// for its final generation and no slot was ever reconciled by two members
// at once.
func TestScaleOutAndInUnderLoad(t *testing.T) {
	fullSet(t)
	cluster, c := localCluster(t)
	ctx := t.Context()
	const objects = 100
	ns := createRing(t, c, "e2e-scale", leaseSeconds)
	journals := t.TempDir()
	set := startOperatorSet(t, cluster, c, ns, 1, journals)
	waitFor(t, 90*time.Second, "one member serves the ring", func() (bool, string) {
		return settled(ctx, c, ns, members(1)...)
	})
	createDatasets(t, c, ns, objects)
	waitReconciled(t, c, ns, objects, 60*time.Second)

	load := startLoad(t, c, ns)
	steps := []any{}
	from := 1
	for _, n := range []int{2, 4, 2, 1} {
		start := time.Now()
		set.scale(n)
		waitFor(t, 120*time.Second, fmt.Sprintf("the ring settles on %d members", n), func() (bool, string) {
			if ok, why := set.runningPods(members(n)...); !ok {
				return false, why
			}
			return settled(ctx, c, ns, members(n)...)
		})
		took := time.Since(start)
		steps = append(steps, fmt.Sprintf("scale%dto%d", from, n), took)
		t.Logf("scaled %d -> %d: the ring settled on the StatefulSet's pods %s after kubectl scale", from, n, took.Round(time.Millisecond))
		from = n
		time.Sleep(3 * time.Second) // the load runs on this many members
	}
	load.stop()
	expectReconciled(t, c, ns, 60*time.Second)
	set.stopPods()
	report, _ := checkJournals(t, c, ns, journals, nil)
	figures(t, "scale", append(append(append([]any{"sequence", "1>2>4>2>1", "lease", lease}, steps...),
		load.figures()...), journalFigures(report)...)...)
}

// apiRestartLeaseSeconds is the ShardRing's lease in the API server restart
// scenario. A member that cannot renew for 2/3 of it fences itself and
// exits, by design, so it must outlast the restart (about 5-10 s here);
// and controller-runtime's leader election (renew deadline 10 s) bounds how
// long the coordinator survives without the API server either way.
const apiRestartLeaseSeconds = 30

// TestAPIServerRestart restarts kube-apiserver under three members and a
// load. Members and the coordinator must ride it out without restarting
// (same processes), the ring must be Ready again, and datasets created
// afterwards must be reconciled.
func TestAPIServerRestart(t *testing.T) {
	fullSet(t)
	cluster, c := localCluster(t)
	ctx := t.Context()
	const objects = 100
	ns := createRing(t, c, "e2e-apiserver", apiRestartLeaseSeconds)
	journals := t.TempDir()
	pods := members(3)
	set := startOperatorSet(t, cluster, c, ns, 3, journals)
	waitFor(t, 90*time.Second, "three members serve the ring", func() (bool, string) {
		return settled(ctx, c, ns, pods...)
	})
	createDatasets(t, c, ns, objects)
	waitReconciled(t, c, ns, objects, 60*time.Second)
	pids := map[string]int{}
	for _, pod := range pods {
		pids[pod], _ = set.runner.PID(pod)
	}
	coord, ok := set.coordinator(pods)
	if !ok {
		t.Fatal("no pod holds the coordinator's Lease")
	}
	load := startLoad(t, c, ns)
	time.Sleep(2 * time.Second)

	start := time.Now()
	if err := cluster.RestartAPIServer(ctx); err != nil {
		t.Fatal(err)
	}
	back := time.Now()
	outage := back.Sub(start)
	// Every member renews its Lease on the new API server, and the ring is
	// Ready (the coordinator's view of those Leases).
	renewed := waitFor(t, 60*time.Second, "every member renews its Lease", func() (bool, string) {
		for _, pod := range pods {
			l := &coordinationv1.Lease{}
			if err := c.Get(ctx, types.NamespacedName{Namespace: ns, Name: membership.LeaseName(ringName, pod)}, l); err != nil {
				return false, err.Error()
			}
			if l.Spec.RenewTime == nil || l.Spec.RenewTime.Time.Before(back.Truncate(time.Microsecond)) {
				return false, pod + " has not renewed yet"
			}
		}
		return true, ""
	})
	// The ring's status survives the restart in etcd: it counts once the
	// coordinator has renewed its own Lease on the new API server too.
	ready := waitFor(t, 60*time.Second, "the ring is Ready again", func() (bool, string) {
		l := &coordinationv1.Lease{}
		if err := c.Get(ctx, types.NamespacedName{Namespace: ns, Name: ringName + "-coordinator"}, l); err != nil {
			return false, err.Error()
		}
		if l.Spec.RenewTime == nil || l.Spec.RenewTime.Time.Before(back.Truncate(time.Microsecond)) {
			return false, "the coordinator has not renewed its Lease yet"
		}
		return settled(ctx, c, ns, pods...)
	})
	restarted := 0
	for _, pod := range pods {
		if pid, _ := set.runner.PID(pod); pid != pids[pod] {
			restarted++
			t.Errorf("%s runs pid %d after the restart, was %d: the member restarted", pod, pid, pids[pod])
		}
	}
	if now, ok := set.coordinator(pods); !ok || now != coord {
		t.Errorf("the coordinator is %q after the restart, was %s", now, coord)
	}

	after := make([]string, 20)
	for i := range after {
		after[i] = fmt.Sprintf("after-restart-%02d", i)
	}
	createNamed(t, c, ns, after)
	created := time.Now()
	newLabelled := waitFor(t, 60*time.Second, "the labeler labels datasets created after the restart", func() (bool, string) {
		if byUID() {
			return true, "" // nothing labels datasets in selectorMode ShardSelector
		}
		for _, name := range after {
			ld := &datav1alpha1.LargeData{}
			if err := c.Get(ctx, types.NamespacedName{Namespace: ns, Name: name}, ld); err != nil {
				return false, err.Error()
			}
			if _, ok := ld.Labels[shardingv1alpha1.LabelSlot]; !ok {
				return false, name + " has no slot label"
			}
		}
		return true, ""
	})
	waitFor(t, 60*time.Second, "datasets created after the restart are reconciled", func() (bool, string) {
		return namesReconciled(ctx, c, ns, after)
	})
	newReconciled := time.Since(created)
	time.Sleep(2 * time.Second)
	load.stop()
	expectReconciled(t, c, ns, 60*time.Second)
	set.stopPods()
	report, _ := checkJournals(t, c, ns, journals, nil)
	figures(t, "apiserver-restart", append(append([]any{"members", 3, "lease", apiRestartLeaseSeconds * time.Second,
		"apiServerDown", outage, "leasesRenewedAfter", renewed, "ringReadyAfter", ready, "restartedMembers", restarted, "coordinator", coord,
		"newObjects", len(after), "labelledIn", newLabelled, "reconciledIn", newReconciled},
		load.figures()...), journalFigures(report)...)...)
}
