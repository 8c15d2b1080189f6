package e2e

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	datav1alpha1 "github.com/kubeshard/kubeshard/api/data/v1alpha1"
	shardingv1alpha1 "github.com/kubeshard/kubeshard/api/sharding/v1alpha1"
	"github.com/kubeshard/kubeshard/pkg/ring"
)

// replica is one operator process, as the StatefulSet's pod would run it.
type replica struct {
	name string
	cmd  *exec.Cmd
	done chan error
	log  string
}

func startReplica(t *testing.T, ns, name string) *replica {
	t.Helper()
	log := filepath.Join(t.TempDir(), name+".log")
	out, err := os.Create(log)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(operator,
		"--metrics-bind-address=0",
		"--health-probe-bind-address=127.0.0.1:"+strconv.Itoa(freePort(t)),
		"--store=memory")
	cmd.Env = append(os.Environ(), "KUBECONFIG="+kubeconfig, "POD_NAME="+name, "POD_NAMESPACE="+ns)
	cmd.Stdout, cmd.Stderr = out, out
	// The replica dies with the test process, whatever happens to the test.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	r := &replica{name: name, cmd: cmd, done: make(chan error, 1), log: log}
	go func() { r.done <- cmd.Wait(); out.Close() }()
	t.Cleanup(func() { r.signal(syscall.SIGKILL); <-r.done; r.done <- nil })
	return r
}

func (r *replica) signal(sig syscall.Signal) { _ = r.cmd.Process.Signal(sig) }

// stop sends SIGTERM, as the kubelet does on a scale-in, and waits for exit.
func (r *replica) stop(t *testing.T) {
	t.Helper()
	r.signal(syscall.SIGTERM)
	select {
	case err := <-r.done:
		r.done <- err
		if err != nil {
			out, _ := os.ReadFile(r.log)
			t.Errorf("replica %s exited with %v after SIGTERM; a graceful stop must exit 0\n%s", r.name, err, tail(out))
		}
	case <-time.After(45 * time.Second):
		t.Errorf("replica %s did not exit within 45s of SIGTERM", r.name)
	}
}

func tail(b []byte) string {
	if len(b) > 4000 {
		b = b[len(b)-4000:]
	}
	return string(b)
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func waitFor(t *testing.T, timeout time.Duration, what string, cond func() (bool, string)) time.Duration {
	t.Helper()
	start := time.Now()
	var why string
	for time.Since(start) < timeout {
		var ok bool
		if ok, why = cond(); ok {
			return time.Since(start)
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Fatalf("%s: not within %s (%s)", what, timeout, why)
	return 0
}

// allReconciled reports whether every LargeData in ns is Ready for its
// current generation.
func allReconciled(ctx context.Context, ns string, want int) (bool, string) {
	list := &datav1alpha1.LargeDataList{}
	if err := env.Client.List(ctx, list, client.InNamespace(ns)); err != nil {
		return false, err.Error()
	}
	done := 0
	for _, ld := range list.Items {
		if ld.Status.Phase == datav1alpha1.PhaseReady && ld.Status.ObservedGeneration == ld.Generation {
			done++
		}
	}
	return done == want && len(list.Items) == want, fmt.Sprintf("%d of %d reconciled", done, want)
}

func ringMembers(ctx context.Context, ns string) (ready bool, members []string) {
	sr := &shardingv1alpha1.ShardRing{}
	if err := env.Client.Get(ctx, types.NamespacedName{Namespace: ns, Name: "largedata"}, sr); err != nil {
		return false, nil
	}
	for _, m := range sr.Status.Members {
		members = append(members, m.Name)
	}
	for _, c := range sr.Status.Conditions {
		if c.Type == shardingv1alpha1.ConditionReady {
			ready = c.Status == metav1.ConditionTrue
		}
	}
	return ready, members
}

func createDatasets(t *testing.T, ns string, n int) {
	t.Helper()
	var wg sync.WaitGroup
	errs := make(chan error, n)
	sem := make(chan struct{}, 16)
	for i := range n {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			ld := &datav1alpha1.LargeData{
				ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: fmt.Sprintf("ds-%04d", i)},
				Spec:       datav1alpha1.LargeDataSpec{Items: 1000, Seed: int64(i), BatchSize: 500},
			}
			if err := env.Client.Create(t.Context(), ld); err != nil {
				errs <- err
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}

// TestReplicasShareTheWorkThroughScalingAndACrash runs the operator as
// separate processes: two replicas reconcile 300 datasets, a third joins, one
// is killed with SIGKILL, and every dataset is reconciled again for a new
// generation by the survivors.
func TestReplicasShareTheWorkThroughScalingAndACrash(t *testing.T) {
	ctx := t.Context()
	const ns, objects = "e2e", 300
	if err := env.Client.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil {
		t.Fatal(err)
	}
	sr := &shardingv1alpha1.ShardRing{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "largedata"},
		Spec: shardingv1alpha1.ShardRingSpec{LeaseDurationSeconds: 6, Resources: []shardingv1alpha1.ShardedResource{{
			GroupResource: shardingv1alpha1.GroupResource{Group: datav1alpha1.GroupVersion.Group, Resource: "largedata"},
			Children:      []shardingv1alpha1.GroupResource{{Resource: "configmaps"}},
		}}},
	}
	if err := env.Client.Create(ctx, sr); err != nil {
		t.Fatal(err)
	}

	replicas := map[string]*replica{}
	for _, name := range []string{"op-0", "op-1"} {
		replicas[name] = startReplica(t, ns, name)
	}
	createDatasets(t, ns, objects)
	took := waitFor(t, 120*time.Second, "two replicas reconcile every dataset", func() (bool, string) { return allReconciled(ctx, ns, objects) })
	t.Logf("2 replicas reconciled %d datasets in %s", objects, took.Round(time.Millisecond))

	// No webhook runs here: the labeler gave every dataset its slot.
	list := &datav1alpha1.LargeDataList{}
	if err := env.Client.List(ctx, list, client.InNamespace(ns)); err != nil {
		t.Fatal(err)
	}
	for _, ld := range list.Items {
		if got, want := ld.Labels[shardingv1alpha1.LabelSlot], strconv.Itoa(ring.Slot(ns, ld.Name, 1024)); got != want {
			t.Errorf("%s has slot label %q, want %q", ld.Name, got, want)
		}
	}

	replicas["op-2"] = startReplica(t, ns, "op-2")
	waitFor(t, 60*time.Second, "three replicas share the ring", func() (bool, string) {
		ready, members := ringMembers(ctx, ns)
		return ready && len(members) == 3, fmt.Sprintf("ready=%v members=%v", ready, members)
	})

	// A crash: the slots of op-1 must be served again within the lease
	// duration plus a few seconds.
	replicas["op-1"].signal(syscall.SIGKILL)
	killed := time.Now()
	waitFor(t, 30*time.Second, "the survivors take over op-1's slots", func() (bool, string) {
		ready, members := ringMembers(ctx, ns)
		return ready && len(members) == 2, fmt.Sprintf("ready=%v members=%v", ready, members)
	})
	t.Logf("slots of the killed replica served again %s after SIGKILL (lease 6s)", time.Since(killed).Round(time.Millisecond))

	// A new generation of every dataset is reconciled by the survivors.
	for i := range list.Items {
		ld := &list.Items[i]
		patch := client.MergeFrom(ld.DeepCopy())
		ld.Spec.Items = 1500
		if err := env.Client.Patch(ctx, ld, patch); err != nil {
			t.Fatal(err)
		}
	}
	took = waitFor(t, 120*time.Second, "the survivors reconcile the new generation", func() (bool, string) { return allReconciled(ctx, ns, objects) })
	t.Logf("2 surviving replicas reconciled the new generation of %d datasets in %s", objects, took.Round(time.Millisecond))

	for _, name := range []string{"op-0", "op-2"} {
		replicas[name].stop(t)
	}
}
