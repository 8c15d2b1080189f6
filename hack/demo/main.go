// Command demo shows kubeshard at work on this machine, with no Docker: it
// starts a local control plane (etcd, kube-apiserver, kube-controller-manager
// from bin/k8s), applies deploy/local, runs the operator's StatefulSet pods as
// local processes, creates LargeData objects, shows how the members share
// them, scales the StatefulSet from 3 to 4 with kubectl and shows the
// rebalance. Then it leaves everything running until Ctrl-C. `make demo` runs
// it.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"text/tabwriter"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/klog/v2"
	"sigs.k8s.io/controller-runtime/pkg/client"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"

	datav1alpha1 "github.com/kubeshard/kubeshard/api/data/v1alpha1"
	shardingv1alpha1 "github.com/kubeshard/kubeshard/api/sharding/v1alpha1"
	"github.com/kubeshard/kubeshard/internal/testenv"
	"github.com/kubeshard/kubeshard/internal/webhookcert"
	"github.com/kubeshard/kubeshard/pkg/assignment"
	"github.com/kubeshard/kubeshard/test/localcluster"
	"github.com/kubeshard/kubeshard/test/podrunner"
)

const (
	// webhookPort is where deploy/local's webhook configuration calls.
	webhookPort = 19443
	operatorNS  = "kubeshard-system"
	ringName    = "largedata"
	statefulSet = "largedata-operator"
)

func main() {
	objects := flag.Int("objects", 20000, "LargeData objects to create.")
	namespaces := flag.Int("namespaces", 10, "Namespaces to spread them over.")
	exit := flag.Bool("exit", false, "Stop everything after the demo instead of waiting for Ctrl-C (for tests).")
	flag.Parse()
	if err := run(*objects, *namespaces, *exit); err != nil {
		fmt.Fprintln(os.Stderr, "\ndemo:", err)
		os.Exit(1)
	}
}

func run(objects, namespaces int, exit bool) error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	root, err := testenv.ModuleRoot()
	if err != nil {
		return err
	}
	work := filepath.Join(root, "bin", "demo")
	if err := os.RemoveAll(work); err != nil {
		return err
	}
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

	step("Building the operator")
	operator := filepath.Join(root, "bin", "largedata-operator")
	build := exec.CommandContext(ctx, "go", "build", "-o", operator, "./cmd/largedata-operator")
	build.Dir, build.Stdout, build.Stderr = root, os.Stdout, os.Stderr
	if err := build.Run(); err != nil {
		return fmt.Errorf("building the operator: %w", err)
	}

	step("Starting etcd, kube-apiserver and kube-controller-manager on loopback")
	cluster, err := localcluster.Start(ctx, localcluster.Options{Dir: filepath.Join(work, "cluster")})
	if err != nil {
		return err
	}
	defer func() {
		step("Stopping the local cluster")
		if err := cluster.Stop(); err != nil {
			fmt.Fprintln(os.Stderr, "demo:", err)
		}
	}()
	c, err := client.New(cluster.Config, client.Options{Scheme: testenv.NewScheme()})
	if err != nil {
		return err
	}

	step("Applying deploy/local (CRDs, RBAC, ShardRing, webhook, StatefulSet with 3 replicas)")
	// CRDs first: the ShardRing in the overlay needs its kind established.
	for _, args := range [][]string{
		{"apply", "--server-side", "-k", filepath.Join(root, "deploy", "base", "crd")},
		{"wait", "--for=condition=Established", "--timeout=60s", "crd", "--all"},
		{"apply", "--server-side", "-k", filepath.Join(root, "deploy", "local")},
	} {
		if out, err := cluster.Kubectl(ctx, args...); err != nil {
			return fmt.Errorf("kubectl %s: %w\n%s", strings.Join(args, " "), err, out)
		}
	}
	// The webhook: member 0 listens on the loopback port that deploy/local
	// names, with a certificate made here; the API server trusts it through
	// the caBundle. If member 0 is down, failurePolicy Ignore admits objects
	// unlabelled and the labeler labels them.
	certDir := filepath.Join(work, "webhook-certs")
	caBundle, err := webhookcert.Write(certDir, "kubeshard-demo-webhook")
	if err != nil {
		return err
	}
	if err := setCABundle(ctx, c, caBundle); err != nil {
		return err
	}

	clientset, err := kubernetes.NewForConfig(cluster.Config)
	if err != nil {
		return err
	}
	runner, err := podrunner.New(podrunner.Options{
		Client:       clientset,
		Namespace:    operatorNS,
		Selector:     labels.SelectorFromSet(labels.Set{"app.kubernetes.io/name": statefulSet}),
		Binary:       operator,
		Kubeconfig:   cluster.KubeconfigPath,
		LogDir:       filepath.Join(work, "pods"),
		ExtraEnv:     []string{"WEBHOOK_CERT_DIR=" + certDir},
		WebhookPorts: map[string]int{statefulSet + "-0": webhookPort},
	})
	if err != nil {
		return err
	}
	runCtx, stopRunner := context.WithCancel(context.WithoutCancel(ctx))
	runnerDone := make(chan error, 1)
	go func() { runnerDone <- runner.Run(runCtx) }()
	defer func() {
		step("Stopping the operator's pods")
		stopRunner()
		<-runnerDone
	}()

	step("Waiting for 3 members to share the ring")
	if _, err := waitRing(ctx, c, 3); err != nil {
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
	before := ringStatus(ctx, c)
	labelsBefore, err := slotLabels(ctx, c)
	if err != nil {
		return err
	}
	start := time.Now()
	if out, err := cluster.Kubectl(ctx, "-n", operatorNS, "scale", "statefulset", statefulSet, "--replicas=4"); err != nil {
		return fmt.Errorf("scaling: %w\n%s", err, out)
	}
	after, err := waitRing(ctx, c, 4)
	if err != nil {
		return err
	}
	took := time.Since(start)
	labelsAfter, err := slotLabels(ctx, c)
	if err != nil {
		return err
	}
	changed := 0
	for key, slot := range labelsBefore {
		if labelsAfter[key] != slot {
			changed++
		}
	}
	fmt.Printf("  rebalance finished in %s: epoch %d -> %d, %d slots moved to the new member,\n  slot labels changed on %d of %d objects (a rebalance writes no object)\n",
		took.Round(100*time.Millisecond), before.Status.Epoch, after.Status.Epoch, slotsOf(after, statefulSet+"-3"), changed, len(labelsBefore))
	if err := showShares(ctx, c); err != nil {
		return err
	}

	fmt.Printf(`
Everything is running. In another terminal:

  export KUBECONFIG=%s
  %s get shardrings -A
  %s -n %s get statefulset,pods
  %s -n %s scale statefulset %s --replicas=2

Metrics of the members:
%s
Logs: %s
`, cluster.KubeconfigPath, kubectl(root), kubectl(root), operatorNS, kubectl(root), operatorNS, statefulSet,
		metricsURLs(runner), filepath.Join(work, "pods"))
	if exit {
		return nil
	}
	fmt.Println("Press Ctrl-C to stop.")
	<-ctx.Done()
	return nil
}

func setCABundle(ctx context.Context, c client.Client, ca []byte) error {
	mwc := &admissionregistrationv1.MutatingWebhookConfiguration{}
	if err := c.Get(ctx, types.NamespacedName{Name: "kubeshard-slot-label"}, mwc); err != nil {
		return fmt.Errorf("reading the webhook configuration: %w", err)
	}
	patch := client.MergeFrom(mwc.DeepCopy())
	for i := range mwc.Webhooks {
		mwc.Webhooks[i].ClientConfig.CABundle = ca
	}
	if err := c.Patch(ctx, mwc, patch); err != nil {
		return fmt.Errorf("setting the webhook's caBundle: %w", err)
	}
	return nil
}

func kubectl(root string) string { return filepath.Join(root, "bin", "k8s", "kubectl") }

func step(msg string) { fmt.Printf("\n==> %s\n", msg) }

func metricsURLs(r *podrunner.Runner) string {
	var b strings.Builder
	for i := range 8 {
		pod := fmt.Sprintf("%s/%s-%d", operatorNS, statefulSet, i)
		if ports, ok := r.Ports(pod); ok {
			fmt.Fprintf(&b, "  %s-%d  http://127.0.0.1:%d/metrics\n", statefulSet, i, ports.Metrics)
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
		if ringSettled(sr, n) {
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

// ringSettled reports whether the ring is Ready with n members that each own
// their share of the slots.
func ringSettled(sr *shardingv1alpha1.ShardRing, n int) bool {
	if int(sr.Status.MemberCount) != n || sr.Status.MovingSlots != 0 {
		return false
	}
	for _, m := range sr.Status.Members {
		if int(m.SlotCount) < int(sr.Spec.Slots)/n {
			return false
		}
	}
	for _, cond := range sr.Status.Conditions {
		if cond.Type == shardingv1alpha1.ConditionReady {
			return cond.Status == metav1.ConditionTrue
		}
	}
	return false
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

// slotLabels returns every LargeData's slot label, by namespace/name.
func slotLabels(ctx context.Context, c client.Client) (map[string]string, error) {
	list := &metav1.PartialObjectMetadataList{}
	list.SetGroupVersionKind(datav1alpha1.GroupVersion.WithKind("LargeDataList"))
	if err := c.List(ctx, list); err != nil {
		return nil, err
	}
	out := make(map[string]string, len(list.Items))
	for _, o := range list.Items {
		out[o.Namespace+"/"+o.Name] = o.Labels[shardingv1alpha1.LabelSlot]
	}
	return out, nil
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
