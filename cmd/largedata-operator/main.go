// Command largedata-operator runs the LargeData operator: one member of a
// sharded ring of replicas (a StatefulSet pod). One binary holds the
// reconciler, the member's Lease and cache, and, on the replica elected
// coordinator, the coordinator and the labeler; it can also serve the
// slot-label webhook, Prometheus metrics and health probes.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"time"

	"github.com/redis/go-redis/v9"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	datav1alpha1 "github.com/kubeshard/kubeshard/api/data/v1alpha1"
	shardingv1alpha1 "github.com/kubeshard/kubeshard/api/sharding/v1alpha1"
	"github.com/kubeshard/kubeshard/internal/journal"
	"github.com/kubeshard/kubeshard/pkg/largedata"
	"github.com/kubeshard/kubeshard/pkg/largedata/source"
	"github.com/kubeshard/kubeshard/pkg/largedata/store"
	"github.com/kubeshard/kubeshard/pkg/largedata/store/memory"
	"github.com/kubeshard/kubeshard/pkg/largedata/store/postgres"
	"github.com/kubeshard/kubeshard/pkg/serving"
	"github.com/kubeshard/kubeshard/pkg/shardcache"
	"github.com/kubeshard/kubeshard/pkg/sharding"
)

type config struct {
	ring, namespace, member string
	sharded, leaderElect    bool
	webhook                 bool
	webhookPort             int
	webhookHost             string
	webhookCertDir          string
	storeKind, postgresURL  string
	metricsAddr, probeAddr  string
	pprofAddr               string
	metricsSecure, http2    bool
	metricsCertDir          string
	concurrency, workers    int
	qps                     float64
	burst                   int
	journal                 string
	cacheCompactAfter       time.Duration
	cacheCompactRelist      bool
	peerAddress, peerCAFile string
	peerTokenFile           string
	gainWindow              time.Duration
	warmupTimeout           time.Duration
	handoverRate            float64
	labelerSweep            time.Duration
	redisAddr               string
	streamPoll, streamStat  time.Duration
}

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "largedata-operator:", err)
		os.Exit(1)
	}
}

func parseFlags() (config, zap.Options) {
	var c config
	fs := flag.CommandLine
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), `largedata-operator reconciles LargeData objects, whose records live in an external store.
Run as a StatefulSet, its replicas split the objects between them by slot (see the ShardRing).

Usage: largedata-operator [flags]

`)
		fs.PrintDefaults()
	}
	fs.StringVar(&c.ring, "ring", "largedata", "Name of the ShardRing this replica is a member of, in --namespace.")
	fs.StringVar(&c.namespace, "namespace", os.Getenv("POD_NAMESPACE"), "Namespace of the ShardRing and the member Leases. Default: $POD_NAMESPACE.")
	fs.StringVar(&c.member, "member", os.Getenv("POD_NAME"), "This replica's member name, its pod name. Default: $POD_NAME.")
	fs.BoolVar(&c.sharded, "sharded", true, "Split objects between replicas. With false, this replica reconciles and caches every object, like an operator without kubeshard (a baseline for benchmarks; run one replica).")
	fs.BoolVar(&c.leaderElect, "leader-elect", true, "Elect one replica as the ring's coordinator (and the labeler). Needed whenever more than one replica runs.")
	fs.BoolVar(&c.webhook, "webhook", false, "Serve the slot-label mutating webhook.")
	fs.DurationVar(&c.labelerSweep, "labeler-sweep-interval", 10*time.Minute, "How often the coordinator's labeler lists every object of the ring's kinds to find slot labels that name the wrong slot (missing labels and labels that name no slot it repairs at once, from a watch, and a LargeData labelled with another valid slot is relabelled by the member that holds it; the sweep is the safety net, and what repairs children). Each sweep lists every LargeData, which with the API server's watch cache off for them is a scan of etcd that grows with the objects (at 300,000 a sweep took 9 minutes); set it to hours there.")
	fs.DurationVar(&c.cacheCompactAfter, "cache-compact-after", shardcache.DefaultCompactAfter, "How long the cache keeps the objects of slots this replica gave away before it frees them, replacing its informers by ones for the slots it kept, filled from the informers they replace.")
	fs.BoolVar(&c.cacheCompactRelist, "cache-compact-relist", false, "Make those replacements list the slots they keep from the API server instead, as before (for comparison): each such list scans every LargeData in etcd when the API server's watch cache is off for them.")
	fs.StringVar(&c.peerAddress, "peer-address", "", "host:port where the other replicas reach this one's metrics server, such as $(POD_IP):8443. Turns peer snapshots on: a replica that gains slots takes their objects from the replicas serving them instead of listing them from the API server (without the API server's watch cache, a scan of every LargeData in etcd). Needs --peer-ca-file over HTTPS; plain HTTP (--metrics-secure=false) only on a loopback address. Default: off.")
	fs.StringVar(&c.peerCAFile, "peer-ca-file", "", "PEM bundle of the CA certificates that verify the other replicas' metrics servers (see --metrics-cert-dir), for --peer-address over HTTPS.")
	fs.StringVar(&c.peerTokenFile, "peer-token-file", "", "File with the bearer token this replica shows the others for --peer-address. Default: the token of its API credentials (in a pod, its ServiceAccount's).")
	fs.DurationVar(&c.warmupTimeout, "warmup-timeout", serving.DefaultWarmupTimeout, "How long a replica giving slots away in a rebalance keeps serving them while the replica that gains them lists their objects; it lets go as soon as that replica's Lease says they are cached. The slots are never left waiting for a list. Negative: let go at once (the gaining replica lists after it has the slots).")
	fs.Float64Var(&c.handoverRate, "handover-rate", 1000, "Objects per second that a replica taking over slots in a rebalance hands to its reconciler, to verify what the old owner had just reconciled; their changes are reconciled at once regardless. Bounds the burst of reconciles (and of reads of the store) after a scale. 0: no limit.")
	fs.DurationVar(&c.gainWindow, "gain-window", serving.DefaultGainWindow, "How long a replica that gains slots in a rebalance waits for the rest of them before its cache lists what it gained, so that it lists once: with the API server's watch cache off for LargeData each list scans all of them in etcd. The slots are served meanwhile. Negative: list each batch at once.")
	fs.IntVar(&c.webhookPort, "webhook-port", 9443, "Port of the webhook server.")
	fs.StringVar(&c.webhookHost, "webhook-host", "", "Address the webhook server listens on. Default: every interface, as a pod behind a Service needs; 127.0.0.1 where the API server calls it on loopback.")
	fs.StringVar(&c.webhookCertDir, "webhook-cert-dir", "", "Folder with the webhook's tls.crt and tls.key. Default: controller-runtime's default folder.")
	fs.StringVar(&c.storeKind, "store", "memory", "Where the records live: memory (per process; for demos and load tests) or postgres.")
	fs.StringVar(&c.postgresURL, "postgres-url", os.Getenv("POSTGRES_URL"), "PostgreSQL connection URL for --store=postgres, e.g. postgres://user@host:5432/db?pool_max_conns=8. Default: $POSTGRES_URL.")
	fs.StringVar(&c.metricsAddr, "metrics-bind-address", ":8443", "Address of the Prometheus metrics endpoint; \"0\" disables it.")
	fs.BoolVar(&c.metricsSecure, "metrics-secure", true, "Serve the metrics over HTTPS to scrapers the API server authenticates (TokenReview) and authorizes for get on /metrics (SubjectAccessReview; the ClusterRole metrics-reader). With false, plain HTTP to anyone who reaches the port.")
	fs.StringVar(&c.metricsCertDir, "metrics-cert-dir", "", "Folder with the metrics server's tls.crt and tls.key. Default: a self-signed certificate made at start.")
	fs.BoolVar(&c.http2, "enable-http2", false, "Serve HTTP/2 on the metrics and webhook servers. Off by default: HTTP/2's rapid reset (CVE-2023-44487).")
	fs.StringVar(&c.pprofAddr, "pprof-bind-address", "0", "Address of Go's /debug/pprof endpoints, unauthenticated: bind it to loopback (127.0.0.1:0 picks a free port). \"0\" disables them.")
	fs.StringVar(&c.probeAddr, "health-probe-bind-address", ":8081", "Address of the /healthz and /readyz probes.")
	fs.IntVar(&c.concurrency, "max-concurrent-reconciles", 4, "LargeData objects reconciled at once by this replica.")
	fs.IntVar(&c.workers, "workers", 4, "Goroutines that transform the records of one batch.")
	fs.Float64Var(&c.qps, "kube-api-qps", 100, "Client-side rate limit of requests to the API server, per second.")
	fs.IntVar(&c.burst, "kube-api-burst", 200, "Client-side burst of requests to the API server.")
	fs.StringVar(&c.redisAddr, "stream-redis-address", os.Getenv("STREAM_REDIS_ADDRESS"), "host:port of the Redis server whose streams feed the datasets with a spec.source (a password, if any, in $STREAM_REDIS_PASSWORD). Default: $STREAM_REDIS_ADDRESS; none: such datasets are Degraded.")
	fs.DurationVar(&c.streamPoll, "stream-poll-interval", time.Second, "How long a dataset whose stream had nothing more to read waits before its next read.")
	fs.DurationVar(&c.streamStat, "stream-status-interval", 10*time.Second, "The least time between two writes of a dataset's status.stream while entries arrive.")
	fs.StringVar(&c.journal, "journal", "", "Append one JSON line per reconcile (object, slot, member, generation, start, end, result) to this file, for end-to-end tests that check no two members ever reconcile one slot at once. Default: no journal.")
	zapOpts := zap.Options{}
	zapOpts.BindFlags(fs)
	flag.Parse()
	return c, zapOpts
}

func (c config) validate() error {
	var errs []error
	if c.sharded && (c.namespace == "" || c.member == "") {
		errs = append(errs, errors.New("--namespace and --member (or $POD_NAMESPACE and $POD_NAME) are required with --sharded"))
	}
	if c.storeKind != "memory" && c.storeKind != "postgres" {
		errs = append(errs, fmt.Errorf("--store must be memory or postgres, not %q", c.storeKind))
	}
	if c.storeKind == "postgres" && c.postgresURL == "" {
		errs = append(errs, errors.New("--store=postgres needs --postgres-url (or $POSTGRES_URL)"))
	}
	if c.journal != "" && !c.sharded {
		errs = append(errs, errors.New("--journal needs --sharded: it records slots and members"))
	}
	if c.streamPoll <= 0 || c.streamStat <= 0 {
		errs = append(errs, errors.New("--stream-poll-interval and --stream-status-interval must be positive"))
	}
	if c.labelerSweep <= 0 {
		errs = append(errs, errors.New("--labeler-sweep-interval must be positive"))
	}
	if c.concurrency < 1 || c.workers < 1 {
		errs = append(errs, errors.New("--max-concurrent-reconciles and --workers must be at least 1"))
	}
	return errors.Join(errs...)
}

func run() error {
	cfg, zapOpts := parseFlags()
	if err := cfg.validate(); err != nil {
		return err
	}
	ctrl.SetLogger(zap.New(zap.UseFlagOptions(&zapOpts)))
	log := ctrl.Log.WithName("setup")
	ctx := ctrl.SetupSignalHandler()

	scheme := runtime.NewScheme()
	utilruntime.Must(clientgoscheme.AddToScheme(scheme))
	utilruntime.Must(shardingv1alpha1.AddToScheme(scheme))
	utilruntime.Must(datav1alpha1.AddToScheme(scheme))

	restCfg, err := ctrl.GetConfig()
	if err != nil {
		return fmt.Errorf("loading the kubeconfig: %w", err)
	}
	// client-go's default of 5 requests per second would throttle every
	// replica long before the API server is busy.
	restCfg.QPS, restCfg.Burst = float32(cfg.qps), cfg.burst
	if cfg.journal != "" {
		// Each entry records when its reconcile last sent a request.
		restCfg.Wrap(journal.TrackRequests)
	}

	opts := ctrl.Options{
		Scheme:                 scheme,
		Metrics:                metricsOptions(cfg.metricsAddr, cfg.metricsSecure, cfg.metricsCertDir, cfg.http2),
		HealthProbeBindAddress: cfg.probeAddr,
		PprofBindAddress:       cfg.pprofAddr,
		// Summary ConfigMaps are the only ConfigMaps the operator reads.
		Cache: cache.Options{ByObject: map[client.Object]cache.ByObject{
			&corev1.ConfigMap{}: {Label: largedataSummaries()},
		}},
		WebhookServer: webhookServer(cfg.webhookHost, cfg.webhookPort, cfg.webhookCertDir, cfg.http2),
	}
	var ring *sharding.Ring
	if cfg.sharded {
		// The ShardRing decides the cache, the coordinator's election and
		// the shutdown's length.
		ring, err = sharding.Setup(ctx, restCfg, &opts, sharding.Options{
			Ring: cfg.ring, Namespace: cfg.namespace, Member: cfg.member, Webhook: cfg.webhook,
			CacheCompactAfter: cfg.cacheCompactAfter, CacheRelistOnCompaction: cfg.cacheCompactRelist,
			LabelerSweepInterval: cfg.labelerSweep, GainWindow: cfg.gainWindow,
			WarmupTimeout: cfg.warmupTimeout, HandoverRate: cfg.handoverRate, PeerAddress: cfg.peerAddress, PeerCAFile: cfg.peerCAFile,
			PeerTokenFile: cfg.peerTokenFile,
			// The webhook already patches every created LargeData (its slot
			// label); the finalizer rides along instead of costing each
			// object a write of its own.
			AdmissionFinalizers: map[schema.GroupKind]string{
				datav1alpha1.GroupVersion.WithKind("LargeData").GroupKind(): largedata.Finalizer,
			},
		})
		if err != nil {
			return err
		}
		if !cfg.leaderElect {
			// A single replica that coordinates without an election.
			opts.LeaderElection = false
		}
	}
	mgr, err := ctrl.NewManager(restCfg, opts)
	if err != nil {
		return fmt.Errorf("creating the manager: %w", err)
	}
	ldOpts := largedata.Options{
		MaxConcurrentReconciles: cfg.concurrency, Workers: cfg.workers,
		Consumer: cfg.member, StreamPollInterval: cfg.streamPoll, StreamStatusInterval: cfg.streamStat,
		Recorder: mgr.GetEventRecorder("largedata-operator"),
	}
	if cfg.redisAddr != "" {
		rc := redis.NewClient(&redis.Options{Addr: cfg.redisAddr, Password: os.Getenv("STREAM_REDIS_PASSWORD")})
		defer func() { _ = rc.Close() }()
		ldOpts.Source = source.NewRedis(rc)
	}
	if ring != nil {
		if err := ring.SetupWithManager(mgr); err != nil {
			return err
		}
		ldOpts.Wrap, ldOpts.LabelChild = ring.Reconciler, ring.LabelChild
		if cfg.journal != "" {
			j, err := journal.Open(cfg.journal, journal.Options{
				Member: cfg.member, Slots: ring.Slots(), Reader: mgr.GetClient(),
				NewObject: func() client.Object { return &datav1alpha1.LargeData{} },
				ByUID:     ring.ByUID(),
			})
			if err != nil {
				return err
			}
			// Closed after the manager has stopped, so that the reconciles it
			// waited for are in the file.
			defer func() {
				if err := j.Close(); err != nil {
					log.Error(err, "Failed to write the journal")
				}
			}()
			// Inside the ring's wrapper: only the reconciles the ring admits.
			ldOpts.Wrap = func(inner reconcile.Reconciler) reconcile.Reconciler {
				return ring.Reconciler(journal.Wrap(inner, j))
			}
		}
	}

	st, closeStore, err := openStore(ctx, cfg)
	if err != nil {
		return err
	}
	defer closeStore()
	if err := largedata.Add(mgr, st, ldOpts); err != nil {
		return err
	}
	if err := mgr.AddHealthzCheck("ping", healthz.Ping); err != nil {
		return fmt.Errorf("adding the health check: %w", err)
	}
	if err := mgr.AddReadyzCheck("ping", healthz.Ping); err != nil {
		return fmt.Errorf("adding the readiness check: %w", err)
	}

	log.Info("Starting", "ring", cfg.ring, "member", cfg.member, "sharded", cfg.sharded, "store", cfg.storeKind, "streamRedis", cfg.redisAddr)
	if err := mgr.Start(ctx); err != nil {
		return fmt.Errorf("running the manager: %w", err)
	}
	return nil
}

// largedataSummaries selects the summary ConfigMaps the reconciler writes.
func largedataSummaries() labels.Selector {
	return labels.SelectorFromSet(labels.Set{largedata.ManagedByLabel: largedata.ManagedByValue})
}

func openStore(ctx context.Context, cfg config) (store.Store, func(), error) {
	if cfg.storeKind == "memory" {
		return memory.New(), func() {}, nil
	}
	pg, err := postgres.New(ctx, cfg.postgresURL)
	if err != nil {
		return nil, nil, fmt.Errorf("opening the PostgreSQL store: %w", err)
	}
	return pg, pg.Close, nil
}
