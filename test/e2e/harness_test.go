package e2e

import (
	"bytes"
	"context"
	"fmt"
	"maps"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	datav1alpha1 "github.com/kubeshard/kubeshard/api/data/v1alpha1"
	shardingv1alpha1 "github.com/kubeshard/kubeshard/api/sharding/v1alpha1"
	"github.com/kubeshard/kubeshard/internal/journal"
	"github.com/kubeshard/kubeshard/pkg/assignment"
	"github.com/kubeshard/kubeshard/pkg/largedata"
	"github.com/kubeshard/kubeshard/pkg/ring"
)

const ringName = "largedata"

var (
	// leaseSeconds is the ShardRing's leaseDurationSeconds in every scenario
	// but the API server restart: 6 s (the default is 15 s) keeps the fault
	// scenarios short; KUBESHARD_E2E_LEASE_SECONDS sets another, to measure
	// the faults at the default. A member fences itself after two thirds of it
	// without renewal.
	leaseSeconds = e2eLeaseSeconds()
	lease        = time.Duration(leaseSeconds) * time.Second
	// recoveryLimit is how soon the slots of a dead member, the coordinator
	// included, must be served again: a lease duration and a few seconds (the
	// design's failure model).
	recoveryLimit = lease + 5*time.Second
	// readyLimit is how soon an object created in a lost member's slots the
	// moment it was lost must be reconciled: its slots served again, their
	// objects listed by the new owner, and one reconcile.
	readyLimit = lease + 10*time.Second
)

func e2eLeaseSeconds() int32 {
	text := os.Getenv("KUBESHARD_E2E_LEASE_SECONDS")
	if text == "" {
		return 6
	}
	n, err := strconv.ParseInt(text, 10, 32)
	if err != nil || n < 3 {
		panic(fmt.Sprintf("KUBESHARD_E2E_LEASE_SECONDS=%q: want a whole number of seconds, at least 3", text))
	}
	return int32(n)
}

// fullSet skips the test unless the full end-to-end set was asked for
// (make e2e). The short set runs in a plain go test.
func fullSet(t *testing.T) {
	t.Helper()
	if os.Getenv("KUBESHARD_E2E") != "full" {
		t.Skip("in the full end-to-end set only: make e2e (KUBESHARD_E2E=full)")
	}
}

// figures logs a scenario's measurements on one line, in one format for
// every scenario, for BENCHMARKS.md: "FIGURES scenario=kill-9 key=value ...".
func figures(t *testing.T, scenario string, keyValues ...any) {
	t.Helper()
	var b strings.Builder
	fmt.Fprintf(&b, "FIGURES scenario=%s", scenario)
	for i := 0; i+1 < len(keyValues); i += 2 {
		v := keyValues[i+1]
		if d, ok := v.(time.Duration); ok {
			v = d.Round(time.Millisecond)
		}
		fmt.Fprintf(&b, " %v=%v", keyValues[i], v)
	}
	t.Log(b.String())
}

// createRing creates a namespace named prefix-<random> (unique, so that
// go test -count=N works on one API server) and in it the ShardRing
// "largedata" for the LargeData kind, with summary ConfigMaps as children.
// It returns the namespace.
func createRing(t *testing.T, c client.Client, prefix string, leaseDurationSeconds int32) string {
	t.Helper()
	ns := fmt.Sprintf("%s-%04x", prefix, rand.IntN(1<<16))
	if err := c.Create(t.Context(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil {
		t.Fatal(err)
	}
	sr := &shardingv1alpha1.ShardRing{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: ringName},
		Spec: shardingv1alpha1.ShardRingSpec{LeaseDurationSeconds: leaseDurationSeconds, SelectorMode: selectorMode(), Resources: []shardingv1alpha1.ShardedResource{{
			GroupResource: shardingv1alpha1.GroupResource{Group: datav1alpha1.GroupVersion.Group, Resource: "largedata"},
			Children:      []shardingv1alpha1.GroupResource{{Resource: "configmaps"}},
		}}},
	}
	if err := c.Create(t.Context(), sr); err != nil {
		t.Fatal(err)
	}
	// Registered first, so it runs last, once the replicas have stopped.
	t.Cleanup(func() { deleteDatasets(t, c, ns) })
	return ns
}

// deleteDatasets removes the scenario's datasets and summaries, finalizers
// and all, once its replicas have stopped. The operator watches LargeData in
// every namespace, so a later scenario's ring would otherwise reconcile them
// too: its figures would count another scenario's objects.
func deleteDatasets(t *testing.T, c client.Client, ns string) {
	ctx := context.WithoutCancel(t.Context())
	list := &datav1alpha1.LargeDataList{}
	if err := c.List(ctx, list, client.InNamespace(ns)); err != nil {
		t.Errorf("cleaning up: %v", err)
		return
	}
	noFinalizers := client.RawPatch(types.MergePatchType, []byte(`{"metadata":{"finalizers":null}}`))
	for i := range list.Items {
		ld := &list.Items[i]
		if err := c.Patch(ctx, ld, noFinalizers); client.IgnoreNotFound(err) != nil {
			t.Errorf("cleaning up: %v", err)
			return
		}
		if err := c.Delete(ctx, ld); client.IgnoreNotFound(err) != nil {
			t.Errorf("cleaning up: %v", err)
			return
		}
	}
	if err := c.DeleteAllOf(ctx, &corev1.ConfigMap{}, client.InNamespace(ns),
		client.MatchingLabels{largedata.ManagedByLabel: largedata.ManagedByValue}); err != nil {
		t.Errorf("cleaning up: %v", err)
	}
}

func getRing(ctx context.Context, c client.Client, ns string) (*shardingv1alpha1.ShardRing, error) {
	sr := &shardingv1alpha1.ShardRing{}
	return sr, c.Get(ctx, types.NamespacedName{Namespace: ns, Name: ringName}, sr)
}

func ringReady(sr *shardingv1alpha1.ShardRing) bool {
	for _, c := range sr.Status.Conditions {
		if c.Type == shardingv1alpha1.ConditionReady {
			return c.Status == metav1.ConditionTrue
		}
	}
	return false
}

// settled reports whether the ring is Ready with exactly the given members,
// each serving its slots, nothing moving and no slot without an owner.
func settled(ctx context.Context, c client.Client, ns string, members ...string) (bool, string) {
	sr, err := getRing(ctx, c, ns)
	if err != nil {
		return false, err.Error()
	}
	st := sr.Status
	var got []string
	for _, m := range st.Members {
		got = append(got, m.Name+":"+string(m.State))
	}
	why := fmt.Sprintf("ready=%v members=%v moves=%d unowned=%d epoch=%d", ringReady(sr), got, len(st.Moves), st.UnownedSlots, st.Epoch)
	if !ringReady(sr) || len(st.Moves) > 0 || st.UnownedSlots > 0 || len(st.Members) != len(members) {
		return false, why
	}
	for _, m := range st.Members {
		if !slices.Contains(members, m.Name) || m.State != shardingv1alpha1.MemberReady {
			return false, why
		}
	}
	return true, why
}

// servedWithout reports whether the ring is Ready and gone owns no slot and
// takes part in no move: its slots are served by the others.
func servedWithout(ctx context.Context, c client.Client, ns, gone string) (bool, string) {
	sr, err := getRing(ctx, c, ns)
	if err != nil {
		return false, err.Error()
	}
	st := sr.Status
	why := fmt.Sprintf("ready=%v members=%d moves=%d unowned=%d", ringReady(sr), len(st.Members), len(st.Moves), st.UnownedSlots)
	for _, m := range st.Members {
		if m.Name == gone && m.SlotCount > 0 {
			return false, why + fmt.Sprintf(" %s still owns %d slots", gone, m.SlotCount)
		}
	}
	for _, mv := range st.Moves {
		if mv.From == gone || mv.To == gone {
			return false, why
		}
	}
	return ringReady(sr) && st.UnownedSlots == 0, why
}

// memberSlots returns the slots the ring's status gives member.
func memberSlots(t *testing.T, c client.Client, ns, member string) []int {
	t.Helper()
	sr, err := getRing(t.Context(), c, ns)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range sr.Status.Members {
		if m.Name == member {
			slots, err := ring.ParseRanges(m.Slots, ring.DefaultSlots)
			if err != nil {
				t.Fatal(err)
			}
			return slots
		}
	}
	return nil
}

// coordinatorHolder returns the holder identity of the coordinator's Lease.
// controller-runtime's leader election writes "<hostname>_<uuid>": in a pod
// the hostname is the pod's name, but every local process here shares the
// machine's, so it tells a new holder from an old one, not which member
// holds it (see holdsCoordinatorLease).
func coordinatorHolder(ctx context.Context, c client.Client, ns string) (string, error) {
	l := &coordinationv1.Lease{}
	if err := c.Get(ctx, types.NamespacedName{Namespace: ns, Name: ringName + "-coordinator"}, l); err != nil {
		return "", err
	}
	if l.Spec.HolderIdentity == nil || *l.Spec.HolderIdentity == "" {
		return "", fmt.Errorf("lease %s-coordinator has no holder", ringName)
	}
	return *l.Spec.HolderIdentity, nil
}

// holdsCoordinatorLease reports whether a process whose output is in log
// acquired the coordinator's Lease of the ring in ns. A process never
// acquires it twice: one that loses it exits.
func holdsCoordinatorLease(log []byte, ns string) bool {
	lock := []byte(ns + "/" + ringName + "-coordinator")
	for line := range bytes.Lines(log) {
		if bytes.Contains(line, []byte("Successfully acquired lease")) && bytes.Contains(line, lock) {
			return true
		}
	}
	return false
}

// waitCoordinator waits until exactly one of the running replicas has
// acquired the coordinator's Lease, and returns it.
func waitCoordinator(t *testing.T, ns string, replicas map[string]*replica) string {
	t.Helper()
	var holder string
	waitFor(t, 60*time.Second, "a coordinator is elected", func() (bool, string) {
		var holders []string
		for name, r := range replicas {
			select {
			case <-r.exited:
				continue
			default:
			}
			if log, err := os.ReadFile(r.log); err == nil && holdsCoordinatorLease(log, ns) {
				holders = append(holders, name)
			}
		}
		if len(holders) != 1 {
			return false, fmt.Sprintf("holders %v", holders)
		}
		holder = holders[0]
		return true, ""
	})
	return holder
}

// namesInSlots returns n object names (prefix-NNNN) whose slots are in slots.
func namesInSlots(ns, prefix string, slots []int, n int) []string {
	var names []string
	for i := 0; len(names) < n; i++ {
		name := fmt.Sprintf("%s-%04d", prefix, i)
		if _, ok := slices.BinarySearch(slots, ring.Slot(ns, name, ring.DefaultSlots)); ok {
			names = append(names, name)
		}
	}
	return names
}

// newDataset is the small dataset every scenario creates: its reconciles
// take milliseconds, so that the scenarios measure the ring, not the store.
func newDataset(ns, name string, seed int64) *datav1alpha1.LargeData {
	return &datav1alpha1.LargeData{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec:       datav1alpha1.LargeDataSpec{Items: 200, Seed: seed, BatchSize: 100},
	}
}

func createNamed(t *testing.T, c client.Client, ns string, names []string) {
	t.Helper()
	for i, name := range names {
		if err := c.Create(t.Context(), newDataset(ns, name, int64(i))); err != nil {
			t.Fatal(err)
		}
	}
}

// waitReconciled waits until every LargeData of ns (want of them, or any
// number if want < 0) is Ready for its current generation.
func waitReconciled(t *testing.T, c client.Client, ns string, want int, timeout time.Duration) time.Duration {
	t.Helper()
	return waitFor(t, timeout, "every dataset is reconciled", func() (bool, string) {
		return allReconciled(t.Context(), c, ns, want)
	})
}

// expectReconciled is waitReconciled for the end of a scenario: a dataset
// left unreconciled fails the test, which goes on to check the journals.
func expectReconciled(t *testing.T, c client.Client, ns string, timeout time.Duration) time.Duration {
	t.Helper()
	return expectWithin(t, timeout, "every dataset is reconciled", func() (bool, string) {
		return allReconciled(t.Context(), c, ns, -1)
	})
}

// namesReconciled reports whether the named datasets are Ready for their
// current generation.
func namesReconciled(ctx context.Context, c client.Client, ns string, names []string) (bool, string) {
	done := 0
	for _, name := range names {
		ld := &datav1alpha1.LargeData{}
		if err := c.Get(ctx, types.NamespacedName{Namespace: ns, Name: name}, ld); err != nil {
			return false, err.Error()
		}
		if ld.Status.Phase == datav1alpha1.PhaseReady && ld.Status.ObservedGeneration == ld.Generation {
			done++
		}
	}
	return done == len(names), fmt.Sprintf("%d of %d reconciled", done, len(names))
}

// load creates datasets and changes the spec of existing ones (a new
// generation each time) at a steady pace, as users would, until stopped.
// Failed requests (during an API server restart) are counted, not fatal.
type load struct {
	c      client.Client
	ns     string
	cancel context.CancelFunc
	done   chan struct{}

	mu    sync.Mutex
	names []string

	creates, updates, failures atomic.Int64
}

// loadTick is the load's pace: each tick creates one dataset and gives two
// existing ones a new generation (10 creates and 20 updates a second).
const loadTick = 100 * time.Millisecond

// startLoad starts the load on the datasets already in ns plus the ones it
// creates (named load-NNNNN).
func startLoad(t *testing.T, c client.Client, ns string) *load {
	t.Helper()
	list := &datav1alpha1.LargeDataList{}
	if err := c.List(t.Context(), list, client.InNamespace(ns)); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	l := &load{c: c, ns: ns, cancel: cancel, done: make(chan struct{})}
	for _, ld := range list.Items {
		l.names = append(l.names, ld.Name)
	}
	go l.run(ctx)
	t.Cleanup(l.stop)
	return l
}

func (l *load) run(ctx context.Context) {
	defer close(l.done)
	ticker := time.NewTicker(loadTick)
	defer ticker.Stop()
	for i := 0; ; i++ {
		select {
		case <-ctx.Done():
			return
		case <-ticker.C:
		}
		name := fmt.Sprintf("load-%05d", i)
		err := l.c.Create(ctx, newDataset(l.ns, name, int64(i)))
		switch {
		case err == nil || apierrors.IsAlreadyExists(err):
			l.creates.Add(1)
			l.mu.Lock()
			l.names = append(l.names, name)
			l.mu.Unlock()
		case ctx.Err() == nil:
			l.failures.Add(1)
		}
		for range 2 {
			l.mu.Lock()
			var target string
			if len(l.names) > 0 {
				target = l.names[rand.IntN(len(l.names))]
			}
			l.mu.Unlock()
			if target == "" {
				break
			}
			patch := fmt.Appendf(nil, `{"spec":{"seed":%d}}`, rand.Int64N(1<<40))
			obj := &datav1alpha1.LargeData{ObjectMeta: metav1.ObjectMeta{Namespace: l.ns, Name: target}}
			if err := l.c.Patch(ctx, obj, client.RawPatch(types.MergePatchType, patch)); err == nil {
				l.updates.Add(1)
			} else if ctx.Err() == nil {
				l.failures.Add(1)
			}
		}
	}
}

// stop ends the load and waits until its last request returned.
func (l *load) stop() {
	l.cancel()
	<-l.done
}

// figures returns the load's counts for a FIGURES line.
func (l *load) figures() []any {
	return []any{"creates", l.creates.Load(), "updates", l.updates.Load(), "failedRequests", l.failures.Load()}
}

// journalFlag is the --journal flag of member, whose journal goes to dir.
// logDir returns where a scenario's member logs go: t.TempDir(), or, when
// KUBESHARD_E2E_LOGS names a folder, a folder of it named after the test,
// kept after the run. Members then also log at debug level (V(1): every
// slot gained and lost, every request dropped or deferred), for a failure
// that needs reading after the fact.
func logDir(t *testing.T) string {
	keep := os.Getenv("KUBESHARD_E2E_LOGS")
	if keep == "" {
		return t.TempDir()
	}
	dir := filepath.Join(keep, fmt.Sprintf("%s-%d", t.Name(), time.Now().Unix()))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Logf("member logs in %s", dir)
	return dir
}

// logLevelArgs are the members' extra logging flags (see logDir).
func logLevelArgs() []string {
	if os.Getenv("KUBESHARD_E2E_LOGS") == "" {
		return nil
	}
	return []string{"--zap-log-level=1"}
}

func journalFlag(dir, member string) string {
	return "--journal=" + filepath.Join(dir, member+".jsonl")
}

// checkJournals merges the journals in dir and fails the test on any two
// members that reconciled objects of one slot at the same time, and on any
// LargeData of ns whose final generation no reconcile ended ok for. Call it
// once every replica has exited: a replica writes its journal's tail on exit.
// excuse, if not nil, says which overlaps a scenario expects and why: those
// are logged, not failed. Only the paused-member scenario has one.
func checkJournals(t *testing.T, c client.Client, ns, dir string, excuse func(journal.Overlap) string) (journal.Report, []journal.Entry) {
	t.Helper()
	paths, err := filepath.Glob(filepath.Join(dir, "*.jsonl"))
	if err != nil || len(paths) == 0 {
		t.Fatalf("no journals in %s: %v", dir, err)
	}
	entries, err := journal.Read(paths...)
	if err != nil {
		t.Fatal(err)
	}
	list := &datav1alpha1.LargeDataList{}
	if err := c.List(context.WithoutCancel(t.Context()), list, client.InNamespace(ns)); err != nil {
		t.Fatal(err)
	}
	want := map[string]int64{}
	for _, ld := range list.Items {
		want[ns+"/"+ld.Name] = ld.Generation
	}
	r := journal.Check(entries, want)
	owners := assignment.New(ring.DefaultSlots)
	if sr, err := getRing(context.WithoutCancel(t.Context()), c, ns); err == nil && sr.Status.Epoch > 0 {
		if table, err := assignment.FromStatus(&sr.Status, ring.DefaultSlots); err == nil {
			owners = table
		}
	}
	logUnfinished(t, list.Items, entries, owners)
	var failed []journal.Overlap
	for _, o := range r.Overlaps {
		if excuse != nil {
			if why := excuse(o); why != "" {
				t.Logf("expected overlap: %s (%s)", o, why)
				continue
			}
		}
		failed = append(failed, o)
	}
	if len(failed) > 0 {
		var b strings.Builder
		for _, o := range failed[:min(len(failed), 10)] {
			fmt.Fprintf(&b, "\n  %s", o)
		}
		t.Errorf("%d pairs of reconciles of one slot by two members at once (first 10):%s", len(failed), b.String())
	}
	if len(r.Missing) > 0 {
		t.Errorf("%d of %d datasets were never reconciled ok at their final generation: %v",
			len(r.Missing), len(want), r.Missing[:min(len(r.Missing), 20)])
	}
	return r, entries
}

// logUnfinished logs, for each dataset that is not Ready for its final
// generation, its last reconciles: which member last worked on it, when and
// how it ended, to tell a lost requeue from a slow one.
func logUnfinished(t *testing.T, items []datav1alpha1.LargeData, entries []journal.Entry, owners *assignment.Table) {
	t.Helper()
	for _, ld := range items {
		if ld.Status.Phase == datav1alpha1.PhaseReady && ld.Status.ObservedGeneration == ld.Generation {
			continue
		}
		key := ld.Namespace + "/" + ld.Name
		var last []string
		for _, e := range entries {
			if e.Object == key {
				last = append(last, fmt.Sprintf("%s gen %d %s-%s %s", e.Member, e.Generation,
					e.Start.Format("15:04:05.000"), e.End.Format("15:04:05.000"), e.Result))
			}
		}
		slot := datasetSlot(&ld)
		t.Logf("%s (slot %d, owned by %q, moving to %q at epoch %d) is %q at generation %d, observed %d; its last reconciles: %v",
			key, slot, owners.Owner[slot], owners.MoveTo[slot], owners.Epoch, ld.Status.Phase, ld.Generation,
			ld.Status.ObservedGeneration, last[max(len(last)-5, 0):])
	}
}

// journalFigures returns what the journals showed, for a FIGURES line:
// reconciles=1234 failed=3 dropped=0 overlaps=0 missing=0
// perMember=op-0:400,op-1:834 (failed: the reconciler returned an error and
// the object was retried; dropped: cancelled by fencing or shutdown).
func journalFigures(r journal.Report) []any {
	members := make([]string, 0, len(r.Members))
	var failed, dropped int
	for _, m := range slices.Sorted(maps.Keys(r.Members)) {
		c := r.Members[m]
		members = append(members, fmt.Sprintf("%s:%d", m, c.Total()))
		failed, dropped = failed+c.Error, dropped+c.Dropped
	}
	return []any{"reconciles", r.Entries, "failed", failed, "dropped", dropped,
		"overlaps", len(r.Overlaps), "missing", len(r.Missing), "perMember", strings.Join(members, ",")}
}

// firstReconcileAfter returns how long after since a member other than
// gone first started a reconcile of an object in slots, or -1.
func firstReconcileAfter(entries []journal.Entry, slots []int, gone string, since time.Time) time.Duration {
	for _, e := range entries { // ordered by start
		if e.Member == gone || !e.Start.After(since) {
			continue
		}
		if _, ok := slices.BinarySearch(slots, e.Slot); ok {
			return e.Start.Sub(since)
		}
	}
	return -1
}
