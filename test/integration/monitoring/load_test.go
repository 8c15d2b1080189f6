package monitoring

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/redis/go-redis/v9"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/util/retry"
	"sigs.k8s.io/controller-runtime/pkg/client"

	datav1alpha1 "github.com/kubeshard/kubeshard/api/data/v1alpha1"
	"github.com/kubeshard/kubeshard/internal/testredis"
	"github.com/kubeshard/kubeshard/pkg/largedata"
)

// loadtestMetrics are the metrics the load-test harness exposes while it
// runs, which the load-test dashboard queries (its description is the
// contract). This test exposes them itself, fed by the load it generates.
var loadtestMetrics = []string{
	"kubeshard_loadtest_creates_total",
	"kubeshard_loadtest_updates_total",
	"kubeshard_loadtest_time_to_reconciled_seconds",
}

// loadExporter serves the load-test metrics on a loopback port.
type loadExporter struct {
	addr            string
	creates         prometheus.Counter
	updates         prometheus.Counter
	timeToReconcile prometheus.Histogram
}

func startLoadExporter(t *testing.T) *loadExporter {
	t.Helper()
	reg := prometheus.NewRegistry()
	e := &loadExporter{
		creates: prometheus.NewCounter(prometheus.CounterOpts{
			Name: loadtestMetrics[0], Help: "LargeData objects the load created.",
		}),
		updates: prometheus.NewCounter(prometheus.CounterOpts{
			Name: loadtestMetrics[1], Help: "Spec updates of LargeData objects the load made.",
		}),
		timeToReconcile: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    loadtestMetrics[2],
			Help:    "Time from a create or update to a status that reports its generation reconciled.",
			Buckets: prometheus.ExponentialBuckets(0.05, 2, 12),
		}),
	}
	reg.MustRegister(e.creates, e.updates, e.timeToReconcile)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	e.addr = l.Addr().String()
	srv := &http.Server{Handler: promhttp.HandlerFor(reg, promhttp.HandlerOpts{}), ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(l) }()
	t.Cleanup(func() { _ = srv.Close() })
	return e
}

// load creates and updates LargeData objects in one namespace and watches
// for each generation to be reconciled, feeding the exporter.
type load struct {
	t   *testing.T
	c   client.Client
	ns  string
	exp *loadExporter

	mu sync.Mutex
	// pending maps an object's name to the generation it waits for and
	// when that generation was written.
	pending map[string]pendingGeneration
	// took are the times to reconciled observed so far.
	took []time.Duration
}

type pendingGeneration struct {
	generation int64
	since      time.Time
}

func newLoad(t *testing.T, c client.Client, ns string, exp *loadExporter) *load {
	t.Helper()
	if err := c.Create(t.Context(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil {
		t.Fatal(err)
	}
	l := &load{t: t, c: c, ns: ns, exp: exp, pending: map[string]pendingGeneration{}}
	ctx, stop := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() {
		defer close(done)
		l.observe(ctx)
	}()
	t.Cleanup(func() {
		stop()
		<-done
	})
	return l
}

// create creates the named objects at about perSecond a second.
func (l *load) create(names []string, perSecond int) {
	l.t.Helper()
	tick := time.NewTicker(time.Second / time.Duration(perSecond))
	defer tick.Stop()
	for i, name := range names {
		ld := &datav1alpha1.LargeData{
			ObjectMeta: metav1.ObjectMeta{Namespace: l.ns, Name: name},
			Spec:       datav1alpha1.LargeDataSpec{Items: 100, Seed: int64(i), BatchSize: 100},
		}
		since := time.Now()
		if err := l.c.Create(l.t.Context(), ld); err != nil {
			l.t.Fatalf("creating %s: %v", name, err)
		}
		l.exp.creates.Inc()
		l.expect(name, ld.Generation, since)
		<-tick.C
	}
}

// update changes the spec of the named objects (a new generation each) at
// about perSecond a second.
func (l *load) update(names []string, perSecond int) {
	l.t.Helper()
	tick := time.NewTicker(time.Second / time.Duration(perSecond))
	defer tick.Stop()
	for _, name := range names {
		ld := &datav1alpha1.LargeData{}
		var since time.Time
		err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
			if err := l.c.Get(l.t.Context(), types.NamespacedName{Namespace: l.ns, Name: name}, ld); err != nil {
				return err
			}
			ld.Spec.Items += 50
			since = time.Now()
			return l.c.Update(l.t.Context(), ld)
		})
		if err != nil {
			l.t.Fatalf("updating %s: %v", name, err)
		}
		l.exp.updates.Inc()
		l.expect(name, ld.Generation, since)
		<-tick.C
	}
}

func (l *load) expect(name string, generation int64, since time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.pending[name] = pendingGeneration{generation: generation, since: since}
}

// observe lists the objects every 200 ms and records the time to reconciled
// of every generation whose status reports it Ready.
func (l *load) observe(ctx context.Context) {
	for {
		list := &datav1alpha1.LargeDataList{}
		if err := l.c.List(ctx, list, client.InNamespace(l.ns)); err == nil {
			now := time.Now()
			l.mu.Lock()
			for _, ld := range list.Items {
				p, ok := l.pending[ld.Name]
				if ok && ld.Status.ObservedGeneration >= p.generation && ld.Status.Phase == datav1alpha1.PhaseReady {
					took := now.Sub(p.since)
					l.exp.timeToReconcile.Observe(took.Seconds())
					l.took = append(l.took, took)
					delete(l.pending, ld.Name)
				}
			}
			l.mu.Unlock()
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// waitReconciled waits until every generation the load wrote is reconciled,
// and returns the times to reconciled.
func (l *load) waitReconciled(timeout time.Duration) []time.Duration {
	l.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		l.mu.Lock()
		left, took := len(l.pending), append([]time.Duration(nil), l.took...)
		l.mu.Unlock()
		if left == 0 {
			return took
		}
		if time.Now().After(deadline) {
			l.t.Fatalf("%d objects were not reconciled within %s", left, timeout)
		}
		select {
		case <-l.t.Context().Done():
			l.t.Fatal(errors.Join(l.t.Context().Err(), fmt.Errorf("%d objects not reconciled", left)))
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// feedStreams creates n datasets in ns fed from Redis streams and produces
// perSecond entries over them, one malformed among the first, until the
// returned function is called; it returns how many entries the datasets'
// statuses say they ingested then.
func feedStreams(t *testing.T, c client.Client, rs *testredis.Server, ns string, n, perSecond int) func() int64 {
	t.Helper()
	ctx := t.Context()
	rc := rs.Client()
	t.Cleanup(func() { _ = rc.Close() })
	streams := make([]string, n)
	for i := range streams {
		ld := &datav1alpha1.LargeData{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: fmt.Sprintf("stream-%02d", i)},
			Spec: datav1alpha1.LargeDataSpec{Items: 10, Source: &datav1alpha1.DataSource{RedisStream: &datav1alpha1.RedisStreamSource{}}}}
		if err := c.Create(ctx, ld); err != nil {
			t.Fatal(err)
		}
		streams[i] = largedata.StreamOf(ld).Name
	}
	if err := rc.XAdd(ctx, &redis.XAddArgs{Stream: streams[0], Values: map[string]any{"not-a-payload": "x"}}).Err(); err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		tick := time.NewTicker(time.Second / time.Duration(perSecond))
		defer tick.Stop()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			case <-tick.C:
			}
			if err := rc.XAdd(ctx, &redis.XAddArgs{Stream: streams[i%n], Values: map[string]any{"payload": fmt.Sprint(i)}}).Err(); err != nil {
				t.Errorf("producing: %v", err)
				return
			}
		}
	}()
	return func() int64 {
		close(stop)
		<-done
		list := &datav1alpha1.LargeDataList{}
		if err := c.List(ctx, list, client.InNamespace(ns)); err != nil {
			t.Fatal(err)
		}
		var ingested int64
		for _, ld := range list.Items {
			if ld.Status.Stream != nil {
				ingested += ld.Status.Stream.Ingested
			}
		}
		return ingested
	}
}
