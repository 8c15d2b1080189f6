package main

import (
	"cmp"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	shardingv1alpha1 "github.com/kubeshard/kubeshard/api/sharding/v1alpha1"
	"github.com/kubeshard/kubeshard/internal/localenv"
	"github.com/kubeshard/kubeshard/internal/testenv"
	"github.com/kubeshard/kubeshard/loadtest/internal/apiprofile"
	"github.com/kubeshard/kubeshard/loadtest/internal/metrics"
	"github.com/kubeshard/kubeshard/loadtest/internal/progress"
	"github.com/kubeshard/kubeshard/loadtest/internal/report"
	"github.com/kubeshard/kubeshard/loadtest/internal/sampler"
	"github.com/kubeshard/kubeshard/loadtest/internal/tracker"
	"github.com/kubeshard/kubeshard/loadtest/internal/workload"
)

// scenario is everything `run` does, from its flags.
type scenario struct {
	client  clientFlags
	objects objectFlags
	write   writeFlags

	members       int
	baseline      int
	churnShare    float64
	churnDuration time.Duration
	scale         string
	faults        string
	faultObjects  int
	// faultWindow is how long after an API server restart its requests are
	// counted. Default: a minute.
	faultWindow      time.Duration
	out              string
	workDir          string
	metricsAddr      string
	sampleInterval   time.Duration
	reconcileTimeout time.Duration
	rebalanceTimeout time.Duration
	cleanup          bool
	operatorArgs     string
	apiServerArgs    string
	apiServerEnv     string
	storage          string
	profileLength    time.Duration
	postgres         bool
	peerSnapshots    bool
	ring             string
	statefulSet      string

	// progress receives the progress bars and step lines; nil for none.
	progress io.Writer
}

func (sc *scenario) register(fs *flag.FlagSet) {
	sc.client.register(fs, "Kubeconfig of the cluster to load, with the operator installed. Default: start a local cluster (etcd, kube-apiserver, kube-controller-manager on loopback), apply deploy/local and run the members as local processes.")
	sc.objects.register(fs, 10000)
	sc.write.register(fs)
	fs.IntVar(&sc.members, "members", 4, "Operator replicas (members) at the start; the local cluster only (with --kubeconfig the StatefulSet is left as it is).")
	fs.IntVar(&sc.baseline, "baseline", 5000, "Objects the bare client-go loop creates, at the same concurrency and QPS, in slices alternating with the harness's first as many creates, to compare create rates; 0 skips it.")
	fs.Float64Var(&sc.churnShare, "churn-share", 0.01, "Share of the objects whose spec changes per second during the churn.")
	fs.DurationVar(&sc.churnDuration, "churn-duration", 0, "How long to churn after every object is reconciled; 0 for no churn.")
	fs.StringVar(&sc.scale, "scale", "", "Scale schedule REPLICAS@OFFSET[,...], offsets from the start of the churn (or, without churn, from every object reconciled), such as 5@30s.")
	fs.StringVar(&sc.faults, "faults", "", "Fault schedule KIND@OFFSET[,...] (local cluster only), offsets like --scale's, one fault at a time: kill (SIGKILL of a member that is not the coordinator; the pod runner restarts it), stop (SIGSTOP of such a member for twice the lease, then SIGCONT) or apiserver-restart. The members then keep reconcile journals, checked at the end for overlapping reconciles of a slot and for objects never reconciled.")
	fs.IntVar(&sc.faultObjects, "fault-objects", 40, "Objects each fault creates, one every half second from the signal, in the lost member's slots (any slots after an API server restart), to measure their time to Ready.")
	fs.StringVar(&sc.out, "out", "", "Folder for the reports. Default: <module root>/bin/loadtest/report.")
	fs.StringVar(&sc.workDir, "work-dir", "", "Folder for the local cluster's data and the logs; emptied first. Default: <module root>/bin/loadtest/work.")
	fs.StringVar(&sc.metricsAddr, "metrics-addr", "127.0.0.1:0", "Loopback address where the harness serves its Prometheus metrics while it runs (port 0: any free port).")
	fs.DurationVar(&sc.sampleInterval, "sample-interval", 5*time.Second, "How often the ring, the members' metrics and the API server's metrics are sampled.")
	fs.DurationVar(&sc.rebalanceTimeout, "rebalance-timeout", 15*time.Minute, "How long to wait, after each scale, for the ring to settle and every member to serve its slots from a synced cache. With warm handovers the ring settles only once the newcomer has listed its slots: minutes at a million objects without the API server's watch cache.")
	fs.DurationVar(&sc.reconcileTimeout, "reconcile-timeout", 30*time.Minute, "How long to wait for every object to be reconciled after the creates and after the churn; when it passes, the reports are written and marked incomplete.")
	fs.BoolVar(&sc.cleanup, "cleanup", true, "Delete the run's objects and namespaces at the end (with a local cluster, everything stops anyway).")
	fs.StringVar(&sc.operatorArgs, "operator-args", "--kube-api-qps=1000 --kube-api-burst=2000", "Flags appended to the operator's (local cluster only); its default of 100 QPS would throttle each member under load.")
	fs.StringVar(&sc.apiServerArgs, "apiserver-args", "", "Flags appended to kube-apiserver's (local cluster only), such as --watch-cache-sizes=largedata.data.kubeshard.dev#0, which keeps LargeData out of the API server's watch cache.")
	fs.DurationVar(&sc.profileLength, "profile-apiserver", time.Minute, "Length of the API server's CPU profile, taken once 40% of the objects are created and split into phases per created object; the API server's live heap is also read (after a forced GC) once every object is reconciled. 0: neither. The profiles land in --out.")
	fs.StringVar(&sc.apiServerEnv, "apiserver-env", "", "Variables added to kube-apiserver's environment (local cluster only), such as GOGC=400: with the watch cache off for LargeData its heap is small and the Go collector runs often.")
	fs.StringVar(&sc.storage, "storage", "etcd", "The local cluster's storage: etcd, or kine (bin/k8s/kine, `make k8s-bins`) over a throwaway PostgreSQL server of its own.")
	fs.BoolVar(&sc.postgres, "postgres", false, "Run a throwaway PostgreSQL server on loopback (the Debian package's binaries) and the members with --store=postgres on it (local cluster only). Default: each member's in-memory store, which a new owner of a slot must rebuild.")
	fs.BoolVar(&sc.peerSnapshots, "peer-snapshots", false, "Start the members with peer snapshots (--peer-address; local cluster only): a member that gains slots takes their objects from the members serving them instead of listing them from the API server.")
	fs.StringVar(&sc.ring, "ring", "kubeshard-system/largedata", "Namespace/name of the operator's ShardRing.")
	fs.StringVar(&sc.statefulSet, "statefulset", "kubeshard-system/largedata-operator", "Namespace/name of the operator's StatefulSet.")
}

func (sc *scenario) validate() error {
	var errs []error
	for _, err := range []error{sc.client.validate(), sc.objects.validate(), sc.write.validate()} {
		if err != nil {
			errs = append(errs, err)
		}
	}
	if sc.members < 1 || sc.baseline < 0 || sc.churnShare <= 0 || sc.churnShare > 1 || sc.churnDuration < 0 || sc.sampleInterval <= 0 || sc.reconcileTimeout <= 0 || sc.rebalanceTimeout <= 0 {
		errs = append(errs, errors.New("--members must be at least 1, --baseline not negative, --churn-share in (0, 1], --churn-duration not negative, --sample-interval, --reconcile-timeout and --rebalance-timeout positive"))
	}
	if sc.peerSnapshots && sc.client.kubeconfig != "" {
		errs = append(errs, errors.New("--peer-snapshots configures the local cluster's members; with --kubeconfig, the operator runs as deployed"))
	}
	if sc.postgres && sc.client.kubeconfig != "" {
		errs = append(errs, errors.New("--postgres starts the store of the local cluster; with --kubeconfig, the operator's store is its own"))
	}
	if sc.storage != "" && sc.storage != "etcd" && sc.storage != "kine" {
		errs = append(errs, fmt.Errorf("--storage is etcd or kine, not %q", sc.storage))
	} else if sc.storage == "kine" && sc.client.kubeconfig != "" {
		errs = append(errs, errors.New("--storage chooses the local cluster's storage; with --kubeconfig, the cluster is already running"))
	}
	if (sc.apiServerArgs != "" || sc.apiServerEnv != "") && sc.client.kubeconfig != "" {
		errs = append(errs, errors.New("--apiserver-args and --apiserver-env configure the local cluster's API server; with --kubeconfig, the cluster is already running"))
	}
	if _, err := parseSchedule(sc.scale); err != nil {
		errs = append(errs, err)
	}
	if _, err := parseFaults(sc.faults); err != nil {
		errs = append(errs, err)
	} else if sc.faults != "" && sc.client.kubeconfig != "" {
		errs = append(errs, errors.New("--faults signals the local cluster's processes; with --kubeconfig there are none to signal"))
	}
	if sc.faults != "" && sc.faultObjects < 1 {
		errs = append(errs, errors.New("--fault-objects must be at least 1"))
	}
	for _, key := range []string{sc.ring, sc.statefulSet} {
		if _, _, ok := strings.Cut(key, "/"); !ok {
			errs = append(errs, fmt.Errorf("%q is not namespace/name", key))
		}
	}
	if host, _, err := net.SplitHostPort(sc.metricsAddr); err != nil || !isLoopback(host) {
		errs = append(errs, fmt.Errorf("--metrics-addr %q must be a loopback host:port such as 127.0.0.1:9090", sc.metricsAddr))
	}
	return errors.Join(errs...)
}

func isLoopback(host string) bool {
	ip := net.ParseIP(host)
	return host == "localhost" || (ip != nil && ip.IsLoopback())
}

func key(s string) types.NamespacedName {
	ns, name, _ := strings.Cut(s, "/")
	return types.NamespacedName{Namespace: ns, Name: name}
}

func runCommand(ctx context.Context, args []string) error {
	setLogOutput(io.Discard)
	sc := scenario{progress: os.Stdout}
	fs := newFlagSet("run", "Run a whole scenario in one process: start a local cluster unless --kubeconfig is given, create the bare client-go\nbaseline, create the objects, wait until all are reconciled, churn and scale, write the reports, clean up.")
	sc.register(fs)
	if err := parse(fs, args); err != nil {
		return err
	}
	r, err := runScenario(ctx, &sc)
	if r != nil {
		fmt.Printf("\n%s\nReports in %s\n", report.Markdown(*r), sc.out)
	}
	return err
}

// runScenario runs the scenario and returns its report, also (written and
// marked incomplete) when a phase did not finish.
func runScenario(ctx context.Context, sc *scenario) (*report.Report, error) {
	if err := sc.validate(); err != nil {
		return nil, err
	}
	schedule, _ := parseSchedule(sc.scale)
	faults, _ := parseFaults(sc.faults)
	root, err := testenv.ModuleRoot()
	if err != nil {
		return nil, err
	}
	if sc.workDir == "" {
		sc.workDir = filepath.Join(root, "bin", "loadtest", "work")
	}
	if sc.out == "" {
		sc.out = filepath.Join(root, "bin", "loadtest", "report")
	}
	step := func(format string, args ...any) {
		if sc.progress != nil {
			fmt.Fprintf(sc.progress, "==> "+format+"\n", args...)
		}
	}

	// The cluster.
	var cfg *rest.Config
	var memberMetrics func(context.Context, string) ([]byte, error)
	var env *localenv.Env
	local := sc.client.kubeconfig == ""
	if local {
		env, err = localenv.Start(ctx, localenv.Options{
			Dir: sc.workDir, Members: sc.members, OperatorArgs: strings.Fields(sc.operatorArgs),
			APIServerArgs: strings.Fields(sc.apiServerArgs), APIServerEnv: strings.Fields(sc.apiServerEnv), Kine: sc.storage == "kine", Postgres: sc.postgres, PeerSnapshots: sc.peerSnapshots, Progress: sc.progress,
			// The audit log says who listed LargeData during faults and
			// rebalances.
			Journals: len(faults) > 0, AuditLists: len(faults) > 0 || len(schedule) > 0,
		})
		if env != nil {
			defer func() {
				step("Stopping the members and the local cluster")
				_ = env.Stop()
			}()
		}
		if err != nil {
			return nil, err
		}
		cfg, memberMetrics = sc.client.apply(env.Config), env.MemberMetrics
		if logFile, err := os.Create(filepath.Join(sc.workDir, "loadtest.log")); err == nil {
			defer logFile.Close()
			setLogOutput(logFile)
		}
		step("Cluster: KUBECONFIG=%s; members' logs in %s", env.Kubeconfig, env.LogDir())
	} else if cfg, err = sc.client.config(); err != nil {
		return nil, err
	}
	c, cs, err := newClients(cfg)
	if err != nil {
		return nil, err
	}
	if !local {
		memberMetrics = podProxyMetrics(cs, key(sc.statefulSet).Namespace)
	}
	sr := &shardingv1alpha1.ShardRing{}
	if err := c.Get(ctx, key(sc.ring), sr); err != nil {
		return nil, fmt.Errorf("reading the ShardRing %s (is the operator installed?): %w", sc.ring, err)
	}

	// The harness's own metrics.
	reg := prometheus.NewRegistry()
	m, err := metrics.New(reg)
	if err != nil {
		return nil, err
	}
	stopMetrics, err := serveMetrics(sc.metricsAddr, reg, step)
	if err != nil {
		return nil, err
	}
	defer stopMetrics()

	// The measurement.
	names := sc.objects.names()
	tr, err := tracker.New(tracker.Options{Names: names, Slots: int(sr.Spec.Slots), OnReconciled: func(d time.Duration) {
		m.TimeToReconciled.Observe(d.Seconds())
	}})
	if err != nil {
		return nil, err
	}
	sm, err := sampler.New(sampler.Options{
		Client: c, Ring: key(sc.ring), Tracker: tr, Interval: sc.sampleInterval,
		MemberMetrics: memberMetrics,
		APIServerMetrics: func(ctx context.Context) ([]byte, error) {
			return cs.Discovery().RESTClient().Get().AbsPath("/metrics").DoRaw(ctx)
		},
	})
	if err != nil {
		return nil, err
	}
	measureCtx, stopMeasuring := context.WithCancel(ctx)
	defer stopMeasuring()
	var measuring sync.WaitGroup
	trackerErr := make(chan error, 1)
	measuring.Go(func() { trackerErr <- tr.Run(measureCtx, c) })
	select {
	case <-tr.Synced():
	case err := <-trackerErr:
		return nil, err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	measuring.Go(func() { sm.Run(measureCtx) })
	since := func() float64 { return time.Since(tr.Start()).Seconds() }

	in := report.Input{
		StartedAt: tr.Start(),
		Scenario: report.Scenario{
			Kubeconfig: sc.client.kubeconfig, LocalCluster: local, Objects: sc.objects.objects, Namespaces: sc.objects.namespaces,
			Members: sc.members, Concurrency: sc.write.concurrency, Rate: sc.write.rate, QPS: sc.client.qps, Burst: sc.client.burst,
			Items: sc.write.items, BatchSize: int32(sc.write.batchSize), Scale: sc.scale, Faults: sc.faults,
		},
	}
	if local {
		in.Scenario.OperatorArgs, in.Scenario.APIServerArgs, in.Scenario.Store = sc.operatorArgs, sc.apiServerArgs, "memory"
		in.Scenario.Storage, in.Scenario.APIServerEnv = sc.storage, sc.apiServerEnv
		if sc.postgres {
			in.Scenario.Store = "postgres"
		}
		in.Scenario.PeerSnapshots = sc.peerSnapshots
	} else if n, err := currentReplicas(ctx, cs, key(sc.statefulSet)); err == nil {
		in.Scenario.Members = n
	}
	if sc.churnDuration > 0 {
		in.Scenario.ChurnShare, in.Scenario.ChurnSeconds = sc.churnShare, sc.churnDuration.Seconds()
	}
	var mu sync.Mutex // guards in.Events, in.Rebalances and in.APIServerCPU
	event := func(what string) {
		mu.Lock()
		defer mu.Unlock()
		in.Events = append(in.Events, report.Event{At: since(), What: what})
	}

	// The API server's CPU profile, once 40% of the objects exist: the
	// creates are in full swing, with a store of a fair size.
	apiGet := func(ctx context.Context, path string) ([]byte, error) {
		p, query, _ := strings.Cut(path, "?")
		req := cs.Discovery().RESTClient().Get().AbsPath(p)
		if query != "" {
			values, err := url.ParseQuery(query)
			if err != nil {
				return nil, err
			}
			for k, v := range values {
				req = req.Param(k, v[0])
			}
		}
		return req.DoRaw(ctx)
	}
	profileCtx, stopProfiling := context.WithCancel(ctx)
	defer stopProfiling()
	var profiling sync.WaitGroup
	if sc.profileLength > 0 {
		profiling.Go(func() {
			for tr.Stats().Present < sc.objects.objects*4/10 {
				select {
				case <-profileCtx.Done():
					return
				case <-time.After(time.Second):
				}
			}
			cpu, err := apiprofile.TakeCPU(profileCtx, apiGet, sc.profileLength, sc.out, "apiserver-cpu")
			if err != nil {
				step("The API server's CPU profile: %v", err)
				return
			}
			mu.Lock()
			in.APIServerCPU = cpu
			mu.Unlock()
		})
	}

	var fl *faulter
	if len(faults) > 0 {
		fl = &faulter{env: env, c: c, ring: key(sc.ring), names: names, spec: sc.write.spec(), objects: sc.faultObjects,
			since: since, apiGet: apiGet, step: step, window: cmp.Or(sc.faultWindow, time.Minute)}
	}
	phases := func() error {
		step("Creating %d LargeData objects in %d namespaces", sc.objects.objects, sc.objects.namespaces)
		event("create")
		in.CreateStart = since()
		createOpts := workload.CreateOptions{
			Names: names, Objects: sc.objects.objects, Concurrency: sc.write.concurrency, Rate: sc.write.rate,
			Spec: sc.write.spec(), Progress: sc.progress, OnCreate: m.Creates.Inc,
		}
		var sliced workload.Result
		if sc.baseline > 0 {
			step("Bare client-go create loop vs the harness: %d objects each, in %d alternating slices, concurrency %d, QPS %g",
				sc.baseline, baselineSlices, sc.write.concurrency, sc.client.qps)
			base, harness, err := compareCreates(ctx, cfg, c, sc, createOpts)
			in.Baseline, sliced = &base, harness
			if err != nil {
				return err
			}
			step("Create rate: harness %.0f/s, bare client-go loop %.0f/s (ratio %.2f)", harness.Rate, base.Rate, harness.Rate/max(base.Rate, 1e-9))
		}
		res, err := workload.Create(ctx, c, createOpts)
		if sc.baseline > 0 {
			res.Done += sliced.Done
			res.Skipped -= min(res.Skipped, sliced.Done)
			res.Errors += sliced.Errors
			res.FirstRate = sliced.Rate
		}
		res.Seconds = since() - in.CreateStart
		res.Rate = float64(res.Done) / max(res.Seconds, 1e-9)
		in.Create = &res
		if err != nil {
			return err
		}

		step("Waiting until every object is reconciled")
		if err := waitReconciled(ctx, tr, sc.objects.objects, sc.reconcileTimeout, sc.progress); err != nil {
			return err
		}
		in.AllReconciled = since()
		event("all reconciled")
		if sc.profileLength > 0 {
			profiling.Wait()
			stored := tr.Stats().Present // and the baseline's, which the tracker does not follow
			if in.Baseline != nil {
				stored += in.Baseline.Done
			}
			h, err := apiprofile.TakeHeap(ctx, apiGet, stored, sc.out, "apiserver-heap")
			if err != nil {
				step("The API server's heap profile: %v", err)
			} else {
				in.APIServerHeap = h
				step("The API server's live heap: %.0f MiB, %.1f KB per LargeData", h.LiveBytes/(1<<20), h.BytesPerObject/1000)
			}
		}

		if sc.churnDuration == 0 && len(schedule) == 0 && len(faults) == 0 {
			return nil
		}
		// Churn and scale, from now.
		var scaling sync.WaitGroup
		var scaleErr error
		phaseStart := time.Now()
		scaling.Go(func() {
			for _, s := range schedule {
				select {
				case <-time.After(time.Until(phaseStart.Add(s.after))):
				case <-ctx.Done():
					return
				}
				from, err := currentReplicas(ctx, cs, key(sc.statefulSet))
				if err == nil {
					err = setReplicas(ctx, cs, key(sc.statefulSet), s.replicas)
				}
				if err != nil {
					scaleErr = err
					return
				}
				step("Scaling the StatefulSet %d -> %d", from, s.replicas)
				event(fmt.Sprintf("scale %d -> %d", from, s.replicas))
				w := report.Window{From: from, To: s.replicas, Start: since(), Lists: -1}
				began := time.Now()
				deadline := time.Now().Add(sc.rebalanceTimeout)
				if err := localenv.WaitSettled(ctx, c, key(sc.ring), s.replicas, sc.rebalanceTimeout); err != nil {
					scaleErr = err
				} else {
					w.End = since()
					step("Ring settled with %d members after %.1f s", s.replicas, w.End-w.Start)
					if memberMetrics != nil {
						if err := waitCachesSynced(ctx, c, key(sc.ring), memberMetrics, max(time.Until(deadline), time.Second)); err != nil {
							scaleErr = err
						} else {
							w.Synced = since()
							step("Every member serves its slots from a synced cache after %.1f s", w.Synced-w.Start)
						}
					}
				}
				if env != nil {
					if members, _, err := auditedInitialLists(env.AuditLog(), began, time.Now()); err == nil {
						w.Lists = members
					} else {
						step("Cannot count the members' lists: %v", err)
					}
				}
				mu.Lock()
				in.Rebalances = append(in.Rebalances, w)
				mu.Unlock()
			}
		})
		var faulting sync.WaitGroup
		if fl != nil {
			faulting.Go(func() {
				for _, f := range faults {
					select {
					case <-time.After(time.Until(phaseStart.Add(f.after))):
					case <-ctx.Done():
						return
					}
					event(f.kind)
					r := fl.run(ctx, f.kind)
					mu.Lock()
					in.Faults = append(in.Faults, r)
					mu.Unlock()
				}
			})
		}
		if sc.churnDuration > 0 {
			step("Churn: %.2f%% of the objects per second for %s", 100*sc.churnShare, sc.churnDuration)
			event("churn")
			res, err := workload.Churn(ctx, c, workload.ChurnOptions{
				Names: names, Objects: sc.objects.objects, Share: sc.churnShare, Duration: sc.churnDuration,
				Concurrency: sc.write.concurrency, Progress: sc.progress, OnUpdate: m.Updates.Inc,
			})
			in.Churn = &res
			event("churn end")
			if err != nil {
				return err
			}
		}
		scaling.Wait()
		faulting.Wait()
		if scaleErr != nil {
			return scaleErr
		}
		step("Waiting until every change is reconciled")
		return waitReconciled(ctx, tr, sc.objects.objects, sc.reconcileTimeout, sc.progress)
	}
	if err := phases(); err != nil {
		in.Incomplete = err.Error()
	}
	stopProfiling()
	profiling.Wait()
	if fl != nil && ctx.Err() == nil {
		// Let the members flush their journals (every 100 ms).
		time.Sleep(3 * time.Second)
		j, err := fl.checkJournals(ctx, env.JournalDir(), in.Faults)
		if err != nil {
			step("Checking the reconcile journals: %v", err)
		} else {
			in.Journal = j
			step("Reconcile journals: %d reconciles, %d overlapping (%d excused), %d objects never reconciled at their final generation",
				j.Entries, j.Overlaps, j.Excused, len(j.Missing))
		}
	}

	sm.Sample(ctx)
	stopMeasuring()
	measuring.Wait()
	in.Stats, in.Samples, in.IdleWrites, in.Snapshots = tr.Stats(), tr.Samples(), tr.IdleWrites(), sm.Snapshots()
	r := report.Build(in)
	if err := report.Write(sc.out, r); err != nil {
		return &r, err
	}
	if sc.cleanup && ctx.Err() == nil {
		step("Cleaning up: deleting the run's objects and namespaces")
		res, err := workload.Cleanup(ctx, c, workload.CleanupOptions{Run: names.Prefix, Concurrency: sc.write.concurrency, Progress: sc.progress})
		in.Cleanup = &res
		r = report.Build(in)
		if werr := report.Write(sc.out, r); werr != nil || err != nil {
			return &r, errors.Join(err, werr)
		}
	}
	if in.Incomplete != "" {
		return &r, fmt.Errorf("incomplete run (reports written): %s", in.Incomplete)
	}
	return &r, nil
}

// baselineSlices is how many alternating slices compareCreates makes: the
// load on the machine changes over time, alternating spreads it over both.
const baselineSlices = 4

// compareCreates creates sc.baseline objects with the bare client-go loop
// and the first sc.baseline objects with the harness, in alternating
// slices, and returns both results; each rate is over its own slices only.
func compareCreates(ctx context.Context, cfg *rest.Config, c client.Client, sc *scenario, opts workload.CreateOptions) (base, harness workload.Result, err error) {
	chunk := max(1, sc.baseline/baselineSlices)
	opts.Progress, opts.SampleFirst = nil, 0
	for i := range baselineSlices {
		b, err := workload.Baseline(ctx, cfg, c, workload.BaselineOptions{
			Names: opts.Names, Objects: chunk, Concurrency: opts.Concurrency, Rate: opts.Rate, Spec: opts.Spec,
		})
		base.Done, base.Errors, base.Seconds = base.Done+b.Done, base.Errors+b.Errors, base.Seconds+b.Seconds
		if err != nil {
			return base, harness, err
		}
		opts.Objects = min(sc.objects.objects, (i+1)*chunk)
		h, err := workload.Create(ctx, c, opts)
		harness.Done, harness.Errors, harness.Seconds = harness.Done+h.Done, harness.Errors+h.Errors, harness.Seconds+h.Seconds
		if err != nil {
			return base, harness, err
		}
	}
	base.Rate = float64(base.Done) / max(base.Seconds, 1e-9)
	harness.Rate = float64(harness.Done) / max(harness.Seconds, 1e-9)
	return base, harness, nil
}

// waitReconciled waits, with a progress bar, until every object is reconciled.
func waitReconciled(ctx context.Context, tr *tracker.Tracker, objects int, timeout time.Duration, w io.Writer) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	bar := progress.New(w, objects, "reconciled")
	defer bar.Finish()
	return tr.WaitReconciled(ctx, objects, func(s tracker.Stats) { bar.Set(s.Reconciled, 0) })
}

func serveMetrics(addr string, reg *prometheus.Registry, step func(string, ...any)) (stop func(), err error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("listening for the metrics endpoint: %w", err)
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	step("The harness's metrics: http://%s/metrics", ln.Addr())
	return func() { _ = srv.Close() }, nil
}

func podProxyMetrics(cs kubernetes.Interface, namespace string) func(context.Context, string) ([]byte, error) {
	return func(ctx context.Context, pod string) ([]byte, error) {
		return cs.CoreV1().Pods(namespace).ProxyGet("http", pod, "metrics", "metrics", nil).DoRaw(ctx)
	}
}

func currentReplicas(ctx context.Context, cs kubernetes.Interface, sts types.NamespacedName) (int, error) {
	s, err := cs.AppsV1().StatefulSets(sts.Namespace).GetScale(ctx, sts.Name, metav1.GetOptions{})
	if err != nil {
		return 0, fmt.Errorf("reading the scale of %s: %w", sts, err)
	}
	return int(s.Spec.Replicas), nil
}

func setReplicas(ctx context.Context, cs kubernetes.Interface, sts types.NamespacedName, replicas int) error {
	s, err := cs.AppsV1().StatefulSets(sts.Namespace).GetScale(ctx, sts.Name, metav1.GetOptions{})
	if err != nil {
		return fmt.Errorf("reading the scale of %s: %w", sts, err)
	}
	s.Spec.Replicas = int32(replicas)
	if _, err := cs.AppsV1().StatefulSets(sts.Namespace).UpdateScale(ctx, sts.Name, s, metav1.UpdateOptions{}); err != nil {
		return fmt.Errorf("scaling %s to %d: %w", sts, replicas, err)
	}
	return nil
}
