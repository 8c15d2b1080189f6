// Command demo shows kubeshard at work on this machine, with no Docker: it
// starts a local control plane (etcd, kube-apiserver, kube-controller-manager
// from bin/k8s), applies deploy/local, runs the operator's StatefulSet pods as
// local processes on a throwaway PostgreSQL server (the store the project
// recommends), creates LargeData objects, shows how the members share them,
// scales the StatefulSet from 3 to 4 with kubectl and shows the rebalance,
// counting from a watch every write to a LargeData meanwhile. Then it leaves
// everything running until Ctrl-C. `make demo` runs it.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"text/tabwriter"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/klog/v2"
	"sigs.k8s.io/controller-runtime/pkg/client"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"

	datav1alpha1 "github.com/kubeshard/kubeshard/api/data/v1alpha1"
	shardingv1alpha1 "github.com/kubeshard/kubeshard/api/sharding/v1alpha1"
	"github.com/kubeshard/kubeshard/internal/localenv"
	"github.com/kubeshard/kubeshard/internal/testenv"
	"github.com/kubeshard/kubeshard/pkg/assignment"
)

const (
	operatorNS  = localenv.Namespace
	ringName    = localenv.Ring
	statefulSet = localenv.StatefulSet
	// afterScale is how long the demo keeps counting writes to LargeData
	// once the rebalance has finished: a new owner that rewrote the objects
	// it took over would do it then.
	afterScale = 30 * time.Second
)

func main() {
	objects := flag.Int("objects", 20000, "LargeData objects to create.")
	namespaces := flag.Int("namespaces", 10, "Namespaces to spread them over.")
	store := flag.String("store", "postgres", "Where the records live: postgres (a throwaway server on loopback, shared by the members) or memory (per member).")
	exit := flag.Bool("exit", false, "Stop everything after the demo instead of waiting for Ctrl-C (for tests).")
	flag.Parse()
	if *store != "postgres" && *store != "memory" {
		fmt.Fprintf(os.Stderr, "demo: --store must be postgres or memory, not %q\n", *store)
		os.Exit(2)
	}
	if err := run(*objects, *namespaces, *store == "postgres", *exit); err != nil {
		fmt.Fprintln(os.Stderr, "\ndemo:", err)
		os.Exit(1)
	}
}

func run(objects, namespaces int, postgres, exit bool) (err error) {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	root, err := testenv.ModuleRoot()
	if err != nil {
		return err
	}
	work := filepath.Join(root, "bin", "demo")
	if err := os.MkdirAll(work, 0o755); err != nil {
		return err
	}
	// The libraries' logs (client-go, the pod runner) go to a file, not
	// between the progress bars.
	logFile, err := os.Create(filepath.Join(work, "demo.log"))
	if err != nil {
		return err
	}
	defer logFile.Close()
	logf.SetLogger(zap.New(zap.WriteTo(logFile)))
	klog.SetLogger(logf.Log)

	store := "the in-memory store (one per member)"
	if postgres {
		store = "PostgreSQL on loopback"
	}
	fmt.Printf("\n==> A local cluster, deploy/local with 3 members, records in %s\n", store)
	env, err := localenv.Start(ctx, localenv.Options{
		Dir: filepath.Join(work, "env"), Members: 3, Postgres: postgres, Progress: os.Stdout,
	})
	defer func() {
		if env == nil {
			return
		}
		step("Stopping the operator's pods, the local cluster and PostgreSQL")
		err = errors.Join(err, env.Stop())
	}()
	if err != nil {
		return err
	}
	c, err := client.NewWithWatch(env.Config, client.Options{Scheme: testenv.NewScheme()})
	if err != nil {
		return err
	}

	if err := createObjects(ctx, c, objects, namespaces); err != nil {
		return err
	}
	if err := waitReconciled(ctx, c, objects); err != nil {
		return err
	}
	if err := showShares(ctx, c); err != nil {
		return err
	}

	step("Scaling the StatefulSet to 4: kubectl scale statefulset largedata-operator --replicas=4")
	writes, err := watchWrites(ctx, c)
	if err != nil {
		return err
	}
	before := ringStatus(ctx, c)
	start := time.Now()
	if out, err := env.Kubectl(ctx, "-n", operatorNS, "scale", "statefulset", statefulSet, "--replicas=4"); err != nil {
		return fmt.Errorf("scaling: %w\n%s", err, out)
	}
	after, err := waitRing(ctx, c, 4)
	if err != nil {
		return err
	}
	took := time.Since(start)
	fmt.Printf("  rebalance finished in %s: epoch %d -> %d, %d slots moved to the new member\n",
		took.Round(100*time.Millisecond), before.Status.Epoch, after.Status.Epoch, slotsOf(after, statefulSet+"-3"))
	fmt.Printf("  counting writes to LargeData for %s more\n", afterScale)
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(afterScale):
	}
	n, examples := writes.stop()
	fmt.Printf("  writes to LargeData objects from the scale to %s after the rebalance: %d (a rebalance writes none)\n",
		afterScale, n)
	if n > 0 {
		fmt.Printf("  for example: %s\n", strings.Join(examples, ", "))
	}
	if err := showShares(ctx, c); err != nil {
		return err
	}

	tokenFile := filepath.Join(filepath.Dir(env.LogDir()), "metrics-token")
	if err := os.WriteFile(tokenFile, []byte(env.MetricsToken()), 0o600); err != nil {
		return err
	}
	fmt.Printf(`
Everything is running. In another terminal:

  export KUBECONFIG=%s
  %s get shardrings -A
  %s -n %s get statefulset,pods
  %s -n %s scale statefulset %s --replicas=2

Metrics of the members (HTTPS, for bearers of a token allowed to get /metrics):
%s
  curl -k -H "Authorization: Bearer $(cat %s)" <URL>

Logs: %s
`, env.Kubeconfig, kubectl(root), kubectl(root), operatorNS, kubectl(root), operatorNS, statefulSet,
		metricsURLs(env), tokenFile, env.LogDir())
	if exit {
		return nil
	}
	fmt.Println("Press Ctrl-C to stop.")
	<-ctx.Done()
	return nil
}

// writeCounter counts, from a watch that starts at the collection's
// resourceVersion, every write the API server records to a LargeData: what
// a user watching the objects would see, whoever wrote them.
type writeCounter struct {
	w        watch.Interface
	done     chan struct{}
	mu       sync.Mutex
	count    int
	examples []string
}

func watchWrites(ctx context.Context, c client.WithWatch) (*writeCounter, error) {
	list := &metav1.PartialObjectMetadataList{}
	list.SetGroupVersionKind(datav1alpha1.GroupVersion.WithKind("LargeDataList"))
	if err := c.List(ctx, list, client.Limit(1)); err != nil {
		return nil, fmt.Errorf("reading the LargeData collection's resourceVersion: %w", err)
	}
	watchList := &metav1.PartialObjectMetadataList{}
	watchList.SetGroupVersionKind(datav1alpha1.GroupVersion.WithKind("LargeDataList"))
	w, err := c.Watch(ctx, watchList, &client.ListOptions{Raw: &metav1.ListOptions{ResourceVersion: list.ResourceVersion}})
	if err != nil {
		return nil, fmt.Errorf("watching LargeData: %w", err)
	}
	wc := &writeCounter{w: w, done: make(chan struct{})}
	go func() {
		defer close(wc.done)
		for ev := range w.ResultChan() {
			if ev.Type == watch.Bookmark || ev.Type == watch.Error {
				continue
			}
			o, ok := ev.Object.(client.Object)
			if !ok {
				continue
			}
			wc.mu.Lock()
			wc.count++
			if len(wc.examples) < 5 {
				wc.examples = append(wc.examples, fmt.Sprintf("%s %s/%s", strings.ToLower(string(ev.Type)), o.GetNamespace(), o.GetName()))
			}
			wc.mu.Unlock()
		}
	}()
	return wc, nil
}

// stop ends the watch and returns the writes it saw and a few of them.
func (wc *writeCounter) stop() (int, []string) {
	wc.w.Stop()
	<-wc.done
	wc.mu.Lock()
	defer wc.mu.Unlock()
	return wc.count, wc.examples
}

func kubectl(root string) string { return filepath.Join(root, "bin", "k8s", "kubectl") }

func step(msg string) { fmt.Printf("\n==> %s\n", msg) }

func metricsURLs(env *localenv.Env) string {
	var b strings.Builder
	for i := range 8 {
		member := fmt.Sprintf("%s-%d", statefulSet, i)
		if url, ok := env.MetricsURLs([]string{member})[member]; ok {
			fmt.Fprintf(&b, "  %s  %s\n", member, url)
		}
	}
	return b.String()
}

func ringStatus(ctx context.Context, c client.Client) *shardingv1alpha1.ShardRing {
	sr := &shardingv1alpha1.ShardRing{}
	_ = c.Get(ctx, types.NamespacedName{Namespace: operatorNS, Name: ringName}, sr)
	return sr
}

func slotsOf(sr *shardingv1alpha1.ShardRing, member string) int32 {
	for _, m := range sr.Status.Members {
		if m.Name == member {
			return m.SlotCount
		}
	}
	return 0
}

// waitRing waits until the ring is Ready with n members and nothing moving.
func waitRing(ctx context.Context, c client.Client, n int) (*shardingv1alpha1.ShardRing, error) {
	bar := newBar(fmt.Sprintf("members ready (of %d)", n), n)
	defer bar.done()
	deadline := time.Now().Add(3 * time.Minute)
	for time.Now().Before(deadline) {
		sr := ringStatus(ctx, c)
		bar.set(int(sr.Status.ReadyMembers))
		if localenv.Settled(sr, n) {
			return sr, nil
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
	return nil, fmt.Errorf("the ring did not become Ready with %d members within 3 minutes", n)
}

func createObjects(ctx context.Context, c client.Client, objects, namespaces int) error {
	step(fmt.Sprintf("Creating %d LargeData objects in %d namespaces", objects, namespaces))
	for i := range namespaces {
		ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("demo-%d", i)}}
		if err := c.Create(ctx, ns); err != nil {
			return err
		}
	}
	bar := newBar("created", objects)
	defer bar.done()
	var created atomic.Int64
	var firstErr error
	var once sync.Once
	jobs := make(chan int)
	var wg sync.WaitGroup
	for range 32 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range jobs {
				ld := &datav1alpha1.LargeData{
					ObjectMeta: metav1.ObjectMeta{Namespace: fmt.Sprintf("demo-%d", i%namespaces), Name: fmt.Sprintf("dataset-%06d", i)},
					Spec:       datav1alpha1.LargeDataSpec{Items: 200, Seed: int64(i), BatchSize: 200},
				}
				if err := c.Create(ctx, ld); err != nil {
					once.Do(func() { firstErr = err })
					continue
				}
				bar.set(int(created.Add(1)))
			}
		}()
	}
	for i := range objects {
		jobs <- i
	}
	close(jobs)
	wg.Wait()
	return firstErr
}

// waitReconciled waits until every object is Ready for its generation.
func waitReconciled(ctx context.Context, c client.Client, objects int) error {
	step("Waiting until every object is labelled with its slot and reconciled by its member")
	bar := newBar("reconciled", objects)
	defer bar.done()
	deadline := time.Now().Add(10 * time.Minute)
	for time.Now().Before(deadline) {
		list := &datav1alpha1.LargeDataList{}
		if err := c.List(ctx, list); err != nil {
			return err
		}
		done := 0
		for _, ld := range list.Items {
			if ld.Status.Phase == datav1alpha1.PhaseReady && ld.Status.ObservedGeneration == ld.Generation {
				done++
			}
		}
		bar.set(done)
		if done == objects {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Second):
		}
	}
	return errors.New("not every object was reconciled within 10 minutes")
}

// showShares prints, per member, its slots and the objects in them.
func showShares(ctx context.Context, c client.Client) error {
	sr := ringStatus(ctx, c)
	table, err := assignment.FromStatus(&sr.Status, int(sr.Spec.Slots))
	if err != nil {
		return err
	}
	list := &metav1.PartialObjectMetadataList{}
	list.SetGroupVersionKind(datav1alpha1.GroupVersion.WithKind("LargeDataList"))
	if err := c.List(ctx, list); err != nil {
		return err
	}
	objects := map[string]int{}
	for _, o := range list.Items {
		if s, err := strconv.Atoi(o.Labels[shardingv1alpha1.LabelSlot]); err == nil && s >= 0 && s < len(table.Owner) {
			objects[table.Owner[s]]++
		}
	}
	fmt.Println()
	w := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(w, "member\tstate\tslots\tobjects\t")
	for _, m := range sr.Status.Members {
		fmt.Fprintf(w, "%s\t%s\t%d\t%d\t\n", m.Name, m.State, m.SlotCount, objects[m.Name])
	}
	return w.Flush()
}

// bar is a one-line progress bar with a rate and an ETA.
type bar struct {
	mu    sync.Mutex
	what  string
	total int
	cur   int
	start time.Time
	last  time.Time
}

func newBar(what string, total int) *bar {
	return &bar{what: what, total: total, start: time.Now()}
}

func (b *bar) set(n int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.cur = n
	if time.Since(b.last) < 100*time.Millisecond && n < b.total {
		return
	}
	b.last = time.Now()
	b.draw()
}

func (b *bar) draw() {
	const width = 30
	filled := 0
	if b.total > 0 {
		filled = min(width, b.cur*width/b.total)
	}
	elapsed := time.Since(b.start)
	rate := float64(b.cur) / max(elapsed.Seconds(), 0.001)
	eta := "-"
	if rate > 0 && b.cur < b.total {
		eta = time.Duration(float64(b.total-b.cur) / rate * float64(time.Second)).Round(time.Second).String()
	}
	fmt.Printf("\r  [%s%s] %d/%d %s  %.0f/s  %s elapsed  ETA %s   ",
		strings.Repeat("#", filled), strings.Repeat(".", width-filled), b.cur, b.total, b.what, rate,
		elapsed.Round(time.Second), eta)
}

func (b *bar) done() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.draw()
	fmt.Println()
}
