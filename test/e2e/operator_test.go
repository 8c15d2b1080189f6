package e2e

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"sigs.k8s.io/controller-runtime/pkg/client"

	datav1alpha1 "github.com/kubeshard/kubeshard/api/data/v1alpha1"
	shardingv1alpha1 "github.com/kubeshard/kubeshard/api/sharding/v1alpha1"
	"github.com/kubeshard/kubeshard/pkg/ring"
)

// replica is one operator process, as the StatefulSet's pod would run it.
type replica struct {
	name string
	cmd  *exec.Cmd
	log  string

	exited   chan struct{} // closed once the process has exited
	err      error         // how it exited; valid once exited is closed
	exitedAt time.Time     // valid once exited is closed
}

// startReplica runs the operator as member name of the ring in ns, with
// args added to its flags. The process is killed when the test ends.
func startReplica(t *testing.T, ns, name string, args ...string) *replica {
	t.Helper()
	log := filepath.Join(logDir(t), name+".log")
	// Appended: a restarted replica writes after its first incarnation.
	out, err := os.OpenFile(log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(operator, append([]string{
		"--metrics-bind-address=0",
		"--health-probe-bind-address=127.0.0.1:" + strconv.Itoa(freePort(t)),
		"--store=memory"}, append(logLevelArgs(), args...)...)...)
	cmd.Env = append(os.Environ(), "KUBECONFIG="+kubeconfig, "POD_NAME="+name, "POD_NAMESPACE="+ns)
	cmd.Stdout, cmd.Stderr = out, out
	// The replica dies with the test process, whatever happens to the test.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	r := &replica{name: name, cmd: cmd, log: log, exited: make(chan struct{})}
	go func() {
		r.err = cmd.Wait()
		r.exitedAt = time.Now()
		_ = out.Close()
		close(r.exited)
	}()
	t.Cleanup(func() {
		select {
		case <-r.exited:
			// It exited before the test ended: if the test failed, say how,
			// since a member that fenced itself explains most failures.
			if t.Failed() && r.err != nil {
				out, _ := os.ReadFile(r.log)
				t.Logf("replica %s exited at %s with %v; its log ends:\n%s", r.name,
					r.exitedAt.Format("15:04:05.000"), r.err, tail(out))
			}
		default:
			r.signal(syscall.SIGKILL)
			<-r.exited
		}
	})
	return r
}

// signal signals the process; a process that has exited is left alone.
func (r *replica) signal(sig syscall.Signal) {
	select {
	case <-r.exited:
	default:
		_ = r.cmd.Process.Signal(sig)
	}
}

// wait reports whether the process exits within timeout.
func (r *replica) wait(timeout time.Duration) bool {
	select {
	case <-r.exited:
		return true
	case <-time.After(timeout):
		return false
	}
}

// stop sends SIGTERM, as the kubelet does on a scale-in, and waits for exit.
func (r *replica) stop(t *testing.T) {
	t.Helper()
	r.signal(syscall.SIGTERM)
	if !r.wait(45 * time.Second) {
		t.Errorf("replica %s did not exit within 45s of SIGTERM", r.name)
		return
	}
	if r.err != nil {
		out, _ := os.ReadFile(r.log)
		t.Errorf("replica %s exited with %v after SIGTERM; a graceful stop must exit 0\n%s", r.name, r.err, tail(out))
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
	took, why, ok := poll(timeout, cond)
	if !ok {
		t.Fatalf("%s: not within %s (%s)", what, timeout, why)
	}
	return took
}

// expectWithin is waitFor for the last check of a scenario: a failure is
// reported and the test goes on, so that its journals are still checked.
func expectWithin(t *testing.T, timeout time.Duration, what string, cond func() (bool, string)) time.Duration {
	t.Helper()
	took, why, ok := poll(timeout, cond)
	if !ok {
		t.Errorf("%s: not within %s (%s)", what, timeout, why)
	}
	return took
}

func poll(timeout time.Duration, cond func() (bool, string)) (time.Duration, string, bool) {
	start := time.Now()
	var why string
	for time.Since(start) < timeout {
		var ok bool
		if ok, why = cond(); ok {
			return time.Since(start), why, true
		}
		time.Sleep(200 * time.Millisecond)
	}
	return time.Since(start), why, false
}

// allReconciled reports whether every LargeData in ns is Ready for its
// current generation, and whether there are want of them (any number if
// want < 0).
func allReconciled(ctx context.Context, c client.Client, ns string, want int) (bool, string) {
	list := &datav1alpha1.LargeDataList{}
	if err := c.List(ctx, list, client.InNamespace(ns)); err != nil {
		return false, err.Error()
	}
	done := 0
	var pending []string
	for _, ld := range list.Items {
		if ld.Status.Phase == datav1alpha1.PhaseReady && ld.Status.ObservedGeneration == ld.Generation {
			done++
		} else if len(pending) < 5 {
			pending = append(pending, fmt.Sprintf("%s (slot %q, phase %q, generation %d, observed %d)", ld.Name,
				ld.Labels[shardingv1alpha1.LabelSlot], ld.Status.Phase, ld.Generation, ld.Status.ObservedGeneration))
		}
	}
	why := fmt.Sprintf("%d of %d reconciled", done, len(list.Items))
	if len(pending) > 0 {
		why += "; not yet: " + strings.Join(pending, ", ")
	}
	return done == len(list.Items) && (want < 0 || len(list.Items) == want), why
}

func createDatasets(t *testing.T, c client.Client, ns string, n int) {
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
			if err := c.Create(t.Context(), newDataset(ns, fmt.Sprintf("ds-%04d", i), int64(i))); err != nil {
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
// separate processes: two replicas reconcile 200 datasets, a third joins,
// and, under a steady load of creates and updates, a member that is not the
// coordinator is killed with SIGKILL. Its slots must be served again within
// a lease duration and 5 s, every dataset is reconciled again for a new
// generation by the survivors, and the journals show no slot reconciled by
// two members at once and no final generation left unreconciled.
func TestReplicasShareTheWorkThroughScalingAndACrash(t *testing.T) {
	ctx := t.Context()
	const objects = 200
	ns := createRing(t, env.Client, "e2e", leaseSeconds)
	journals := t.TempDir()

	replicas := map[string]*replica{}
	for _, name := range []string{"op-0", "op-1"} {
		replicas[name] = startReplica(t, ns, name, journalFlag(journals, name))
	}
	createDatasets(t, env.Client, ns, objects)
	took := waitReconciled(t, env.Client, ns, objects, 120*time.Second)
	t.Logf("2 replicas reconciled %d datasets in %s", objects, took.Round(time.Millisecond))

	// No webhook runs here: the labeler gave every dataset its slot.
	list := &datav1alpha1.LargeDataList{}
	if err := env.Client.List(ctx, list, client.InNamespace(ns)); err != nil {
		t.Fatal(err)
	}
	for _, ld := range list.Items {
		got, labelled := ld.Labels[shardingv1alpha1.LabelSlot]
		switch want := strconv.Itoa(ring.Slot(ns, ld.Name, ring.DefaultSlots)); {
		case byUID() && labelled:
			t.Errorf("%s has slot label %q; selectorMode ShardSelector labels no dataset", ld.Name, got)
		case !byUID() && got != want:
			t.Errorf("%s has slot label %q, want %q", ld.Name, got, want)
		}
	}
	expectServerSideSharding(t, env.Client, ns)

	replicas["op-2"] = startReplica(t, ns, "op-2", journalFlag(journals, "op-2"))
	waitFor(t, 60*time.Second, "three replicas share the ring", func() (bool, string) {
		return settled(ctx, env.Client, ns, "op-0", "op-1", "op-2")
	})

	// A crash of a member that is not the coordinator (killing that one is
	// another scenario), while users keep creating and changing datasets.
	victim := "op-0"
	if coord := waitCoordinator(t, ns, replicas); coord == victim {
		victim = "op-1"
	}
	victimSlots := memberSlots(t, env.Client, ns, victim)
	load := startLoad(t, env.Client, ns)
	time.Sleep(2 * time.Second)
	replicas[victim].signal(syscall.SIGKILL)
	killed := time.Now()
	recovery := waitFor(t, 30*time.Second, "the survivors take over the killed member's slots", func() (bool, string) {
		return servedWithout(ctx, env.Client, ns, victim)
	})
	if recovery > recoveryLimit {
		t.Errorf("the slots of the killed member were served again %s after SIGKILL, want at most %s (lease %s + 5s)",
			recovery.Round(time.Millisecond), recoveryLimit, lease)
	}
	time.Sleep(2 * time.Second) // the load goes on with the survivors
	load.stop()

	// A new generation of every dataset is reconciled by the survivors.
	for i := range list.Items {
		ld := &list.Items[i]
		patch := client.MergeFrom(ld.DeepCopy())
		ld.Spec.Items = 300
		if err := env.Client.Patch(ctx, ld, patch); err != nil {
			t.Fatal(err)
		}
	}
	took = expectReconciled(t, env.Client, ns, 120*time.Second)
	t.Logf("2 surviving replicas reconciled the new generation of every dataset in %s", took.Round(time.Millisecond))

	for name, r := range replicas {
		if name != victim {
			r.stop(t)
		}
	}
	report, entries := checkJournals(t, env.Client, ns, journals, nil)
	figures(t, "kill-9", append(append([]any{"members", 3, "killed", victim, "lease", lease,
		"servedAgain", recovery, "limit", recoveryLimit,
		"firstReconcileInItsSlots", firstReconcileAfter(entries, victimSlots, victim, killed)},
		load.figures()...), journalFigures(report)...)...)
}
