// Command cachebench measures, against a real kube-apiserver and etcd
// (envtest) that it starts itself, what sharding an operator's cache with
// kubeshard buys and costs, each figure against a baseline measured in the
// same run:
//
//  1. the heap a member's cache takes, for 1 member and for each of 4, against
//     controller-runtime's plain cache of every object;
//  2. a join of a 4th member to 3 at the same object count: writes to the
//     sharded objects, objects the newcomer lists, time until it serves;
//  3. API requests per reconcile of 4 members against the unsharded operator.
//
// It prints Markdown tables on stdout and progress on stderr, and exits 1 when
// a target is missed.
//
//	go run ./test/bench/cachebench [-objects 100000] [-namespaces 10] [-slots 1024] [-create-workers 32] [-out figures.json]
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"maps"
	"os"
	"os/signal"
	"runtime"
	"slices"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/go-logr/logr"
	"k8s.io/klog/v2"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"

	"github.com/kubeshard/kubeshard/internal/testenv"
)

// Targets from the issue.
const (
	maxMemberMemory = 0.30             // each of 4 members' heap / 1 member's
	maxListedError  = 0.10             // |listed - objects in its slots| / objects in its slots
	maxJoin         = 15 * time.Second // a newcomer's start to serving all its slots, synced
	changes         = 2000             // objects changed in the steady-state measurement
)

type config struct {
	objects, namespaces, slots, createWorkers int
	out                                       string
}

type figures struct {
	Objects       int              `json:"objects"`
	Namespaces    int              `json:"namespaces"`
	Slots         int              `json:"slots"`
	CreateSeconds float64          `json:"createSeconds"`
	Memory        []memoryRow      `json:"memory"`
	Rebalance     rebalanceFigures `json:"rebalance"`
	Steady        []steadyRow      `json:"steady"`
	Targets       []target         `json:"targets"`
	RunSeconds    float64          `json:"runSeconds"`
	LoadAtStart   string           `json:"loadAverageAtStart"`
	LoadAtEnd     string           `json:"loadAverageAtEnd"`
}

// loadAverage returns the 1-minute load average, or "unknown" off Linux.
func loadAverage() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	if f := strings.Fields(string(b)); len(f) > 0 {
		return f[0]
	}
	return "unknown"
}

type target struct {
	What string `json:"what"`
	Got  string `json:"got"`
	OK   bool   `json:"ok"`
}

func main() {
	var c config
	flag.IntVar(&c.objects, "objects", 100_000, "number of LargeData objects")
	flag.IntVar(&c.namespaces, "namespaces", 10, "number of namespaces the objects spread over")
	flag.IntVar(&c.slots, "slots", 1024, "the ring's slots (P)")
	flag.IntVar(&c.createWorkers, "create-workers", 32, "concurrent requests that create (and patch) objects")
	flag.StringVar(&c.out, "out", "", "optional path for a JSON copy of the figures")
	flag.Parse()
	if c.objects < 1 || c.namespaces < 1 || c.slots < 4 || c.createWorkers < 1 {
		fmt.Fprintln(os.Stderr, "cachebench: need -objects >= 1, -namespaces >= 1, -slots >= 4, -create-workers >= 1")
		os.Exit(2)
	}

	// On a busy 2-core machine kube-apiserver can miss envtest's default
	// start timeout of 20 s, and envtest's retry then collides with the
	// first attempt's process, which is still shutting down.
	for env, d := range map[string]string{"KUBEBUILDER_CONTROLPLANE_START_TIMEOUT": "2m", "KUBEBUILDER_CONTROLPLANE_STOP_TIMEOUT": "1m"} {
		if os.Getenv(env) == "" {
			_ = os.Setenv(env, d)
		}
	}

	// Errors only, and none while members stop: their shutdown (a
	// coordinator's write cut short, leader election released) is expected
	// and would bury the tables.
	sink := &errorSink{w: os.Stderr, on: &atomic.Bool{}}
	sink.on.Store(true)
	ctrl.SetLogger(logr.New(sink))
	klog.SetLogger(logr.New(sink))

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	figs, err := run(ctx, os.Stdout, os.Stderr, c, sink.on.Store)
	stop()
	if err == nil && c.out != "" {
		err = writeJSON(c.out, figs)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "cachebench:", err)
		os.Exit(2)
	}
	for _, t := range figs.Targets {
		if !t.OK {
			os.Exit(1)
		}
	}
}

// run measures everything; logErrors(false) silences the log while members
// stop.
func run(ctx context.Context, out, progress io.Writer, c config, logErrors func(bool)) (figs figures, err error) {
	began := time.Now()
	figs = figures{Objects: c.objects, Namespaces: c.namespaces, Slots: c.slots, LoadAtStart: loadAverage()}
	fmt.Fprintln(progress, "starting the control plane (envtest)")
	env, err := testenv.Start(testenv.Options{})
	if err != nil {
		return figs, err
	}
	// A member that stops on its own ends the run at once, not after the
	// timeout of whatever waits for it.
	ctx, abort := context.WithCancelCause(ctx)
	defer abort(nil)
	rc := &ringCluster{env: env, slots: c.slots, watch: newWatchlist(), abort: abort}
	var unsharded *member
	defer func() {
		// Members first: they leave the ring through the API server.
		running := rc.members
		if unsharded != nil {
			running = append(running, unsharded)
		}
		logErrors(false)
		err = errors.Join(err, stopAll(running), env.Stop())
	}()

	fmt.Fprintf(progress, "creating %d LargeData in %d namespaces with %d workers\n", c.objects, c.namespaces, c.createWorkers)
	t := time.Now()
	if rc.data, err = createObjects(ctx, env.Client, c, progress); err != nil {
		return figs, err
	}
	figs.CreateSeconds = time.Since(t).Seconds()
	fmt.Fprintf(out, "# cachebench: %d LargeData in %d namespaces, P = %d\n\n", c.objects, c.namespaces, c.slots)
	fmt.Fprintf(out, "%d CPUs; load average (1 min) %s at the start: kube-apiserver, etcd, this process and any other work share them.\n\n", runtime.NumCPU(), figs.LoadAtStart)
	fmt.Fprintf(out, "Created in %.1f s (%.0f objects/s, %d workers).\n\n", figs.CreateSeconds, float64(c.objects)/figs.CreateSeconds, c.createWorkers)

	fmt.Fprintln(progress, "1. memory")
	if figs.Memory, err = measureMemory(ctx, env.Config, cache.Options{Scheme: env.Scheme}, c, progress); err != nil {
		return figs, err
	}
	printMemory(out, figs.Memory)

	fmt.Fprintln(progress, "2. rebalance 3 -> 4")
	// The operator without kubeshard, the baseline of the steady state,
	// fills its cache while the old members wait to compact: that wait is
	// 30 s of a 10-minute run.
	unshardedWatch := newWatchlist()
	startBaseline := func() error {
		fmt.Fprintln(progress, "  starting the operator without kubeshard alongside the ring")
		unsharded, err = startMember(ctx, env, memberOptions{name: "operator", leaderLease: "largedata-operator", watch: unshardedWatch, abort: abort})
		return err
	}
	if figs.Rebalance, err = measureRebalance(ctx, rc, progress, startBaseline); err != nil {
		return figs, err
	}
	printRebalance(out, figs.Rebalance)

	fmt.Fprintln(progress, "3. steady state: without kubeshard (the ring runs alongside)")
	keys := changedKeys(rc.data, changes)
	everyone := append(slices.Clone(rc.members), unsharded)
	err = waitQuiet(ctx, everyone, 3*time.Second, 5*time.Minute, func() (bool, string) {
		if ok, why := unshardedReady(unsharded, len(rc.data.keys)); !ok {
			return ok, why
		}
		return rc.settled(ctx)
	})
	if err != nil {
		return figs, err
	}
	plain, err := measureSteady(ctx, "without kubeshard, 1 replica", []*member{unsharded}, env.Client, keys, 1, c.createWorkers, unshardedWatch)
	if err != nil {
		return figs, err
	}
	err = unsharded.stop()
	unsharded = nil
	if err != nil {
		return figs, err
	}

	fmt.Fprintln(progress, "3. steady state: 4 members")
	if err := waitQuiet(ctx, rc.members, 3*time.Second, 2*time.Minute, func() (bool, string) { return rc.settled(ctx) }); err != nil {
		return figs, err
	}
	sharded, err := measureSteady(ctx, "kubeshard, 4 members", rc.members, env.Client, keys, 2, c.createWorkers, rc.watch)
	if err != nil {
		return figs, err
	}
	figs.Steady = []steadyRow{plain, sharded}
	printSteady(out, figs.Steady)

	figs.Targets = targets(figs)
	printTargets(out, figs.Targets)
	figs.RunSeconds = time.Since(began).Seconds()
	figs.LoadAtEnd = loadAverage()
	fmt.Fprintf(out, "\nRun time: %s (creating the objects: %s). Load average (1 min) at the end: %s.\n",
		time.Since(began).Round(time.Second), time.Duration(figs.CreateSeconds*float64(time.Second)).Round(time.Second), figs.LoadAtEnd)
	return figs, nil
}

func printMemory(w io.Writer, rows []memoryRow) {
	fmt.Fprintln(w, "## 1. Cache memory: heap in use after GC attributable to the cache")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "One cache at a time in this process: GC twice, read the heap, create and start the cache with a LargeData")
	fmt.Fprintln(w, "informer (kubeshard: AddSlots of the member's slots), wait for the sync, GC twice, read again. The 4 members'")
	fmt.Fprintln(w, "slots are ring.Assign's for op-0..op-3. Ratios are of heap in use.")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "| configuration | slots | objects cached | heap in use MiB | live heap MiB | sync s | x 1 member | x unsharded |")
	fmt.Fprintln(w, "|---|--:|--:|--:|--:|--:|--:|--:|")
	for _, r := range rows {
		slots := "-"
		toSingle := "-"
		if r.Kubeshard {
			slots = fmt.Sprint(r.Slots)
			toSingle = fmt.Sprintf("%.3f", r.ToSingle)
		}
		fmt.Fprintf(w, "| %s | %s | %d | %.1f | %.1f | %.1f | %s | %.3f |\n", r.Name, slots, r.Objects, r.InUse, r.Live, r.Sync, toSingle, r.ToUnsharded)
	}
	fmt.Fprintln(w)
}

func printRebalance(w io.Writer, f rebalanceFigures) {
	fmt.Fprintln(w, "## 2. Rebalance: a 4th member joins 3")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "Members are managers in this process, each with its own connection to the API server")
	fmt.Fprintln(w, "(shardcache.NewCacheFunc, sharding.New with RebalanceQuiet 1 s, a LargeData controller wrapped by")
	fmt.Fprintln(w, "ring.Reconciler that reads through the manager's client and writes nothing). Lease timings are twice the")
	fmt.Fprintf(w, "defaults (leaseDurationSeconds %d, leader election %s/%s/%s) because everything shares 2 cores. Times from\n",
		leaseSeconds, leaderLeaseDuration, leaderRenewDeadline, leaderRetryPeriod)
	fmt.Fprintln(w, "the start of the 4th member's manager. The client uses watch-list (WatchListClient is on by default in")
	fmt.Fprintln(w, "client-go v0.37): objects listed are the ADDED events of its initial-list streams plus items of any LIST.")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "| figure | value | target |")
	fmt.Fprintln(w, "|---|--:|--|")
	fmt.Fprintf(w, "| 3 members: start to settled (every slot served, caches synced) | %.2f s | |\n", f.StartSeconds)
	fmt.Fprintf(w, "| join: op-3's slots assigned, no move pending | %.2f s | |\n", f.AssignedSeconds)
	fmt.Fprintf(w, "| **join: op-3 serves all its %d slots with synced caches (c)** | **%.2f s** | <= %s |\n", f.NewMemberSlots, f.JoinServedSeconds, maxJoin)
	same := "the same slots"
	if !f.PredictedSlots {
		same = "the slots predicted by ring.Assign (op-3 got others)"
	}
	fmt.Fprintf(w, "| baseline: a lone cache of %s (%d objects) syncs, just before the join | %.2f s | |\n", same, f.LoneObjects, f.LoneSyncSeconds)
	fmt.Fprintf(w, "| join: all 4 members serve their slots, ring Ready | %.2f s | |\n", f.SettledSeconds)
	listed := f.ListedStream + f.ListedList
	fmt.Fprintf(w, "| **objects listed by op-3 (b)** (watch-list %d, LIST %d) | **%d** | within %.0f%% of the next row |\n", f.ListedStream, f.ListedList, listed, 100*maxListedError)
	fmt.Fprintf(w, "| baseline: objects in op-3's slots at the end | %d | |\n", f.ObjectsInSlots)
	fmt.Fprintf(w, "| objects op-3 caches (Counts), in %d slot groups | %d | |\n", f.NewMemberGroups, f.ObjectsCached)
	if f.Unreadable > 0 {
		fmt.Fprintf(w, "| initial lists whose objects could not be counted (not JSON) | %d | 0 |\n", f.Unreadable)
	}
	fmt.Fprintf(w, "| **writes to LargeData, join to settled (a)** | **%d** | 0 |\n", f.LargeDataWrites)
	fmt.Fprintf(w, "| writes to LargeData, join to old members compacted (%.1f s) | %d | 0 |\n", f.CompactedSeconds, f.LargeDataWritesComp)
	fmt.Fprintf(w, "| objects the old members listed again to compact (CompactAfter 30 s) | %d | |\n", f.CompactionListed)
	fmt.Fprintln(w)
	fmt.Fprintf(w, "Writes by resource, all members, from op-3's start to settled (%.2f s), against what the quiet ring of 3\n", f.SettledSeconds)
	fmt.Fprintln(w, "wrote in 5 s before the join, scaled to the same duration:")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "| resource | join | quiet ring, same duration |")
	fmt.Fprintln(w, "|---|--:|--:|")
	res := slices.Collect(maps.Keys(f.Writes))
	for r := range f.QuietWrites {
		if _, ok := f.Writes[r]; !ok {
			res = append(res, r)
		}
	}
	slices.Sort(res)
	for _, r := range res {
		fmt.Fprintf(w, "| %s | %d | %.1f |\n", r, f.Writes[r], f.QuietWrites[r])
	}
	fmt.Fprintln(w)
}

func printSteady(w io.Writer, rows []steadyRow) {
	fmt.Fprintln(w, "## 3. Steady state: API requests per reconcile")
	fmt.Fprintln(w)
	fmt.Fprintf(w, "spec.seed of %d objects (spread over every namespace and slot) is patched by the benchmark's own client; the\n", rows[0].Changed)
	fmt.Fprintln(w, "window runs from the first patch until every change has been reconciled. The reconciler Gets the object")
	fmt.Fprintln(w, "through the manager's client and writes nothing. Requests are those of every member (all verbs), except")
	fmt.Fprintln(w, "named Lease requests (member renewals, leader election), listed apart. The operator without kubeshard runs")
	fmt.Fprintln(w, "with leader election, as an HA operator does; it is measured while the 4 members run alongside (they")
	fmt.Fprintln(w, "reconcile the same changes, counted apart), then stopped, and the 4 members are measured alone.")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "| operator | reconciles | dropped by ring | API requests (no Leases) | per reconcile | member Lease req. | leader election req. | Lease req./s | window s |")
	fmt.Fprintln(w, "|---|--:|--:|--:|--:|--:|--:|--:|--:|")
	for _, r := range rows {
		leases := float64(r.MemberLeases+r.LeaderLeases) / r.Seconds
		fmt.Fprintf(w, "| %s | %d | %d | %d | %.4f | %d | %d | %.2f | %.2f |\n",
			r.Name, r.Reconciles, r.Dropped, r.Requests, r.PerReconcile, r.MemberLeases, r.LeaderLeases, leases, r.Seconds)
	}
	fmt.Fprintln(w)
	for _, r := range rows {
		if len(r.ByCall) > 0 {
			var parts []string
			for _, k := range slices.Sorted(maps.Keys(r.ByCall)) {
				parts = append(parts, fmt.Sprintf("%s %d", k, r.ByCall[k]))
			}
			fmt.Fprintf(w, "Requests of %s: %s.\n", r.Name, strings.Join(parts, ", "))
		}
		if r.Duplicates > 0 {
			fmt.Fprintf(w, "%s reconciled %d changed objects more than once.\n", r.Name, r.Duplicates)
		}
	}
	fmt.Fprintln(w)
}

func targets(f figures) []target {
	var ts []target
	single := 0.0
	worst := 0.0
	for _, r := range f.Memory {
		if r.Member {
			worst = max(worst, r.ToSingle)
		}
		if r.Kubeshard && !r.Member {
			single = r.InUse
		}
	}
	ts = append(ts, target{What: fmt.Sprintf("each of 4 members' cache <= %.2f x 1 member's", maxMemberMemory),
		Got: fmt.Sprintf("worst %.3f (1 member %.1f MiB)", worst, single), OK: worst <= maxMemberMemory})
	rb := f.Rebalance
	ts = append(ts, target{What: "writes to LargeData during the rebalance = 0",
		Got: fmt.Sprintf("%d (%d until compacted)", rb.LargeDataWrites, rb.LargeDataWritesComp), OK: rb.LargeDataWrites == 0 && rb.LargeDataWritesComp == 0})
	listed := rb.ListedStream + rb.ListedList
	off := float64(listed-rb.ObjectsInSlots) / float64(rb.ObjectsInSlots)
	ts = append(ts, target{What: fmt.Sprintf("objects listed by the new member within %.0f%% of those in its slots", 100*maxListedError),
		Got: fmt.Sprintf("%d listed, %d in its slots (%+.1f%%)", listed, rb.ObjectsInSlots, 100*off), OK: rb.Unreadable == 0 && off <= maxListedError && off >= -maxListedError})
	ts = append(ts, target{What: fmt.Sprintf("new member serves all its slots, synced, within %s", maxJoin),
		Got: fmt.Sprintf("%.2f s (a lone cache of its slots: %.2f s)", rb.JoinServedSeconds, rb.LoneSyncSeconds), OK: rb.JoinServedSeconds <= maxJoin.Seconds()})
	if len(f.Steady) == 2 {
		plain, sharded := f.Steady[0], f.Steady[1]
		ts = append(ts, target{What: "kubeshard adds no API requests per reconcile",
			Got: fmt.Sprintf("%.4f with 4 members, %.4f without kubeshard", sharded.PerReconcile, plain.PerReconcile),
			OK:  sharded.PerReconcile <= plain.PerReconcile})
	}
	return ts
}

func printTargets(w io.Writer, ts []target) {
	fmt.Fprintln(w, "## Targets")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "| target | measured | |")
	fmt.Fprintln(w, "|---|---|---|")
	for _, t := range ts {
		verdict := "PASS"
		if !t.OK {
			verdict = "FAIL"
		}
		fmt.Fprintf(w, "| %s | %s | %s |\n", t.What, t.Got, verdict)
	}
}

func writeJSON(path string, figs figures) error {
	b, err := json.MarshalIndent(figs, "", "  ")
	if err != nil {
		return fmt.Errorf("encoding the figures: %w", err)
	}
	if err := os.WriteFile(path, append(b, '\n'), 0o644); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	return nil
}

// errorSink is a logr.LogSink that prints errors, and nothing while on is
// false.
type errorSink struct {
	w    io.Writer
	on   *atomic.Bool
	name string
	kv   []any
}

func (s *errorSink) Init(logr.RuntimeInfo)    {}
func (s *errorSink) Enabled(int) bool         { return false }
func (s *errorSink) Info(int, string, ...any) {}
func (s *errorSink) WithName(n string) logr.LogSink {
	c := *s
	c.name = strings.TrimPrefix(s.name+"/"+n, "/")
	return &c
}

func (s *errorSink) WithValues(kv ...any) logr.LogSink {
	c := *s
	c.kv = append(slices.Clip(s.kv), kv...)
	return &c
}

func (s *errorSink) Error(err error, msg string, kv ...any) {
	// A manager that stops reports the leader election it released; that is
	// not a failure.
	if s.on.Load() && msg != "error received after stop sequence was engaged" {
		fmt.Fprintf(s.w, "error: %s: %s: %v %v\n", s.name, msg, err, append(slices.Clip(s.kv), kv...))
	}
}
