package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	shardingv1alpha1 "github.com/kubeshard/kubeshard/api/sharding/v1alpha1"
	"github.com/kubeshard/kubeshard/internal/localenv"
	"github.com/kubeshard/kubeshard/internal/testenv"
	"github.com/kubeshard/kubeshard/loadtest/internal/metrics"
	"github.com/kubeshard/kubeshard/loadtest/internal/report"
	"github.com/kubeshard/kubeshard/loadtest/internal/sampler"
	"github.com/kubeshard/kubeshard/loadtest/internal/tracker"
	"github.com/kubeshard/kubeshard/loadtest/internal/workload"
)

const kubeconfigHelp = "Kubeconfig of the cluster. Default: $KUBECONFIG."

func createCommand(ctx context.Context, args []string) error {
	setLogOutput(io.Discard)
	var cf clientFlags
	var of objectFlags
	var wf writeFlags
	fs := newFlagSet("create", "Create --objects LargeData objects across --namespaces namespaces at --rate with --concurrency writes in flight.\nResumable: objects that exist are skipped, so a second run continues where the first stopped.")
	cf.register(fs, kubeconfigHelp)
	of.register(fs, 10000)
	wf.register(fs)
	if err := parse(fs, args); err != nil {
		return err
	}
	if err := firstError(of.validate(), wf.validate()); err != nil {
		return err
	}
	c, _, err := cf.clients()
	if err != nil {
		return err
	}
	res, err := workload.Create(ctx, c, workload.CreateOptions{
		Names: of.names(), Objects: of.objects, Concurrency: wf.concurrency, Rate: wf.rate, Spec: wf.spec(), Progress: os.Stdout,
	})
	fmt.Printf("created %d, existed %d, failed %d, errors %d, %.1f s, %.0f creates/s\n", res.Done, res.Skipped, res.Failed, res.Errors, res.Seconds, res.Rate)
	return err
}

func churnCommand(ctx context.Context, args []string) error {
	setLogOutput(io.Discard)
	var cf clientFlags
	var of objectFlags
	var wf writeFlags
	var share float64
	var duration time.Duration
	fs := newFlagSet("churn", "Change the spec (seed) of --share of the --objects per second, chosen at random, for --duration.")
	cf.register(fs, kubeconfigHelp)
	of.register(fs, 10000)
	wf.register(fs)
	fs.Float64Var(&share, "share", 0.01, "Share of the objects changed per second.")
	fs.DurationVar(&duration, "duration", time.Minute, "How long to churn.")
	if err := parse(fs, args); err != nil {
		return err
	}
	if err := of.validate(); err != nil {
		return err
	}
	c, _, err := cf.clients()
	if err != nil {
		return err
	}
	res, err := workload.Churn(ctx, c, workload.ChurnOptions{
		Names: of.names(), Objects: of.objects, Share: share, Duration: duration, Concurrency: wf.concurrency, Progress: os.Stdout,
	})
	fmt.Printf("updated %d, failed %d, errors %d, %.0f updates/s\n", res.Done, res.Failed, res.Errors, res.Rate)
	return err
}

func scaleCommand(ctx context.Context, args []string) error {
	setLogOutput(io.Discard)
	var cf clientFlags
	var schedule, sts, ring string
	var timeout time.Duration
	fs := newFlagSet("scale", "Scale the operator's StatefulSet through its scale subresource on a schedule, and report how long each rebalance took\n(the ShardRing Ready with that many members and no slot moving).")
	cf.register(fs, kubeconfigHelp)
	fs.StringVar(&schedule, "schedule", "", "REPLICAS@OFFSET[,...] from now, such as 5@0s,4@2m. Required.")
	fs.StringVar(&sts, "statefulset", "kubeshard-system/largedata-operator", "Namespace/name of the StatefulSet.")
	fs.StringVar(&ring, "ring", "kubeshard-system/largedata", "Namespace/name of the ShardRing.")
	fs.DurationVar(&timeout, "timeout", 15*time.Minute, "How long to wait for each rebalance; with warm handovers it lasts until the newcomer has listed its slots.")
	if err := parse(fs, args); err != nil {
		return err
	}
	if timeout <= 0 {
		return errors.New("--timeout must be positive")
	}
	steps, err := parseSchedule(schedule)
	if err != nil {
		return err
	}
	if len(steps) == 0 {
		return fmt.Errorf("--schedule is required")
	}
	c, cs, err := cf.clients()
	if err != nil {
		return err
	}
	start := time.Now()
	for _, s := range steps {
		select {
		case <-time.After(time.Until(start.Add(s.after))):
		case <-ctx.Done():
			return ctx.Err()
		}
		from, err := currentReplicas(ctx, cs, key(sts))
		if err != nil {
			return err
		}
		if err := setReplicas(ctx, cs, key(sts), s.replicas); err != nil {
			return err
		}
		t := time.Now()
		fmt.Printf("%s scaled %d -> %d\n", t.Format(time.TimeOnly), from, s.replicas)
		if err := localenv.WaitSettled(ctx, c, key(ring), s.replicas, timeout); err != nil {
			return err
		}
		fmt.Printf("%s ring settled with %d members after %.1f s\n", time.Now().Format(time.TimeOnly), s.replicas, time.Since(t).Seconds())
	}
	return nil
}

func measureCommand(ctx context.Context, args []string) error {
	setLogOutput(io.Discard)
	var cf clientFlags
	var of objectFlags
	var out, ring, sts, memberMetrics, metricsAddr string
	var duration, interval time.Duration
	fs := newFlagSet("measure", "Follow the run's objects and the members while other commands (create, churn, scale) or anything else load the\ncluster; stop after --duration or once --objects objects exist and all are reconciled; write the reports.\nTime to reconciled is measured from the client timestamp that create and churn put on every spec write.")
	cf.register(fs, kubeconfigHelp)
	of.register(fs, 0)
	fs.StringVar(&out, "out", "", "Folder for the reports. Default: <module root>/bin/loadtest/report.")
	fs.DurationVar(&duration, "duration", 10*time.Minute, "Longest time to measure.")
	fs.DurationVar(&interval, "sample-interval", 5*time.Second, "How often to sample the ring and the metrics.")
	fs.StringVar(&ring, "ring", "kubeshard-system/largedata", "Namespace/name of the ShardRing.")
	fs.StringVar(&sts, "statefulset", "kubeshard-system/largedata-operator", "Namespace/name of the StatefulSet (its pods' metrics port is named metrics).")
	fs.StringVar(&memberMetrics, "member-metrics", "proxy", "Where members' metrics come from: proxy (the API server's pod proxy, for members run with --metrics-secure=false: the proxy does not pass a token on) or a JSON file {\"token\": bearer token, \"urls\": {member: URL}} (`loadtest cluster` writes one).")
	fs.StringVar(&metricsAddr, "metrics-addr", "127.0.0.1:0", "Loopback address of the harness's own metrics endpoint.")
	if err := parse(fs, args); err != nil {
		return err
	}
	if err := of.validate(); err != nil {
		return err
	}
	if out == "" {
		root, err := testenv.ModuleRoot()
		if err != nil {
			return err
		}
		out = filepath.Join(root, "bin", "loadtest", "report")
	}
	c, cs, err := cf.clients()
	if err != nil {
		return err
	}
	fetchMember := podProxyMetrics(cs, key(sts).Namespace)
	if memberMetrics != "proxy" {
		fetchMember = func(ctx context.Context, member string) ([]byte, error) {
			data, err := os.ReadFile(memberMetrics)
			if err != nil {
				return nil, err
			}
			var targets localenv.MetricsTargets
			if err := json.Unmarshal(data, &targets); err != nil {
				return nil, fmt.Errorf("reading %s: %w", memberMetrics, err)
			}
			return localenv.FetchURL(ctx, targets.URLs[member], targets.Token)
		}
	}
	sr := &shardingv1alpha1.ShardRing{}
	if err := c.Get(ctx, key(ring), sr); err != nil {
		return fmt.Errorf("reading the ShardRing %s: %w", ring, err)
	}
	reg := prometheus.NewRegistry()
	m, err := metrics.New(reg)
	if err != nil {
		return err
	}
	stop, err := serveMetrics(metricsAddr, reg, func(f string, a ...any) { fmt.Printf("==> "+f+"\n", a...) })
	if err != nil {
		return err
	}
	defer stop()
	tr, err := tracker.New(tracker.Options{Names: of.names(), Slots: int(sr.Spec.Slots), OnReconciled: func(d time.Duration) { m.TimeToReconciled.Observe(d.Seconds()) }})
	if err != nil {
		return err
	}
	sm, err := sampler.New(sampler.Options{Client: c, Ring: key(ring), Tracker: tr, Interval: interval, MemberMetrics: fetchMember,
		APIServerMetrics: func(ctx context.Context) ([]byte, error) {
			return cs.Discovery().RESTClient().Get().AbsPath("/metrics").DoRaw(ctx)
		}})
	if err != nil {
		return err
	}
	mctx, cancel := context.WithTimeout(ctx, duration)
	defer cancel()
	var wg sync.WaitGroup
	var runErr error
	wg.Go(func() { runErr = tr.Run(mctx, c) })
	wg.Go(func() { sm.Run(mctx) })
	var waitErr error
	var reconciledAt float64
	if of.objects > 0 {
		waitErr = waitReconciled(mctx, tr, of.objects, duration, os.Stdout)
		reconciledAt = time.Since(tr.Start()).Seconds()
	} else {
		<-mctx.Done()
	}
	cancel()
	wg.Wait()
	in := report.Input{StartedAt: tr.Start(), Stats: tr.Stats(), Samples: tr.Samples(), IdleWrites: tr.IdleWrites(), Snapshots: sm.Snapshots(),
		Scenario: report.Scenario{Kubeconfig: cf.kubeconfig, Objects: of.objects, Namespaces: of.namespaces}}
	if n, err := currentReplicas(ctx, cs, key(sts)); err == nil {
		in.Scenario.Members = n
	}
	if waitErr != nil {
		in.Incomplete = waitErr.Error()
	} else if of.objects > 0 && len(in.Samples) > 0 {
		// From the first write seen to the last object reconciled.
		first := float64(in.Samples[0].At - in.Samples[0].Latency)
		for _, s := range in.Samples {
			first = min(first, float64(s.At-s.Latency))
		}
		in.CreateStart, in.AllReconciled = first, reconciledAt
	}
	r := report.Build(in)
	if err := report.Write(out, r); err != nil {
		return err
	}
	fmt.Printf("\n%s\nReports in %s\n", report.Markdown(r), out)
	return firstError(runErr, waitErr)
}

func cleanupCommand(ctx context.Context, args []string) error {
	setLogOutput(io.Discard)
	var cf clientFlags
	var prefix string
	var concurrency int
	var timeout time.Duration
	fs := newFlagSet("cleanup", "Delete every LargeData object and namespace labelled loadtest.kubeshard.dev/run=<prefix>, page by page, and wait\nuntil the operator has finalized them and the namespaces are gone.")
	cf.register(fs, kubeconfigHelp)
	fs.StringVar(&prefix, "prefix", "loadtest", "The run's prefix.")
	fs.IntVar(&concurrency, "concurrency", 32, "Deletes in flight at once.")
	fs.DurationVar(&timeout, "timeout", 10*time.Minute, "Longest wait for the objects and namespaces to be gone.")
	if err := parse(fs, args); err != nil {
		return err
	}
	c, _, err := cf.clients()
	if err != nil {
		return err
	}
	res, err := workload.Cleanup(ctx, c, workload.CleanupOptions{Run: prefix, Concurrency: concurrency, Timeout: timeout, Progress: os.Stdout})
	fmt.Printf("deleted %d, already gone %d, failed %d, %.1f s\n", res.Done, res.Skipped, res.Failed, res.Seconds)
	return err
}

func clusterCommand(ctx context.Context, args []string) error {
	var members int
	var workDir, operatorArgs, apiServerArgs, storage string
	var postgres bool
	fs := newFlagSet("cluster", "Start a local cluster (etcd, kube-apiserver, kube-controller-manager on loopback), apply deploy/local, run the\noperator's members as local processes, print the kubeconfig and keep running until Ctrl-C. The other\ncommands then take --kubeconfig; `measure --member-metrics <work-dir>/member-metrics.json` reads the members' metrics.")
	fs.IntVar(&members, "members", 4, "Operator replicas at the start.")
	fs.StringVar(&workDir, "work-dir", "", "Folder for the cluster's data and the logs; emptied first. Default: <module root>/bin/loadtest/cluster.")
	fs.StringVar(&operatorArgs, "operator-args", "--kube-api-qps=1000 --kube-api-burst=2000", "Flags appended to the operator's.")
	fs.StringVar(&storage, "storage", "etcd", "The cluster's storage: etcd, or kine (`make k8s-bins`) over a throwaway PostgreSQL server of its own.")
	fs.StringVar(&apiServerArgs, "apiserver-args", "", "Flags appended to kube-apiserver's, such as --watch-cache-sizes=largedata.data.kubeshard.dev#0.")
	fs.BoolVar(&postgres, "postgres", false, "Run a throwaway PostgreSQL server on loopback and the members with --store=postgres on it. Default: the in-memory store.")
	if err := parse(fs, args); err != nil {
		return err
	}
	if members < 1 {
		return fmt.Errorf("--members must be at least 1, not %d", members)
	}
	if storage != "etcd" && storage != "kine" {
		return fmt.Errorf("--storage is etcd or kine, not %q", storage)
	}
	if workDir == "" {
		root, err := testenv.ModuleRoot()
		if err != nil {
			return err
		}
		workDir = filepath.Join(root, "bin", "loadtest", "cluster")
	}
	setLogOutput(io.Discard)
	env, err := localenv.Start(ctx, localenv.Options{
		Dir: workDir, Members: members, OperatorArgs: strings.Fields(operatorArgs), APIServerArgs: strings.Fields(apiServerArgs), Kine: storage == "kine",
		Postgres: postgres, Progress: os.Stdout,
	})
	if err != nil {
		return err
	}
	defer func() {
		fmt.Println("==> Stopping the members and the local cluster")
		_ = env.Stop()
	}()
	urls := filepath.Join(workDir, "member-metrics.json")
	fmt.Printf("\nRunning. In another terminal:\n\n  export KUBECONFIG=%s\n  go run ./loadtest create --objects 100000\n  go run ./loadtest measure --objects 100000 --member-metrics %s\n\nPress Ctrl-C to stop.\n", env.Kubeconfig, urls)
	tick := time.NewTicker(2 * time.Second)
	defer tick.Stop()
	for {
		// Members come and go with the StatefulSet's replicas; keep the
		// file of their metrics URLs current.
		if err := env.WriteMetricsURLs(urls, 64); err != nil {
			return err
		}
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
	}
}

func firstError(errs ...error) error {
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

func reportCommand(_ context.Context, args []string) error {
	var in string
	fs := newFlagSet("report", "Print the Markdown summary of a run's report.json (as run and measure write it) as this version of the harness\nwrites it, for a report written by an earlier one.")
	fs.StringVar(&in, "in", "", "The report.json to read. Required.")
	if err := parse(fs, args); err != nil {
		return err
	}
	if in == "" {
		return errors.New("--in is required")
	}
	data, err := os.ReadFile(in)
	if err != nil {
		return err
	}
	var r report.Report
	if err := json.Unmarshal(data, &r); err != nil {
		return fmt.Errorf("reading %s: %w", in, err)
	}
	fmt.Print(report.Markdown(r))
	return nil
}
