// Package localenv runs the operator as deployed, on this machine: a local
// control plane (test/localcluster), deploy/local applied, the webhook on a
// loopback port with a certificate made here, optionally a throwaway
// PostgreSQL server for the store, and the operator's StatefulSet pods run
// as local processes (test/podrunner), so that scaling the StatefulSet adds
// and removes real members. The demo, the load test and the monitoring test
// start their clusters through it.
package localenv

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	appsv1 "k8s.io/api/apps/v1"

	datav1alpha1 "github.com/kubeshard/kubeshard/api/data/v1alpha1"
	shardingv1alpha1 "github.com/kubeshard/kubeshard/api/sharding/v1alpha1"
	"github.com/kubeshard/kubeshard/internal/testenv"
	"github.com/kubeshard/kubeshard/internal/testpg"
	"github.com/kubeshard/kubeshard/internal/webhookcert"
	"github.com/kubeshard/kubeshard/test/localcluster"
	"github.com/kubeshard/kubeshard/test/podrunner"
)

// What deploy/local sets up.
const (
	Namespace   = "kubeshard-system"
	StatefulSet = "largedata-operator"
	Ring        = "largedata"
)

// Options configure Start.
type Options struct {
	// Dir receives the operator binary, the cluster's data and logs and the
	// members' logs. Required; Start empties it first.
	Dir string
	// Members is the StatefulSet's replicas at the start. Default 1.
	Members int
	// OperatorArgs are appended to the operator container's args, such as
	// --kube-api-qps=500. Default: none.
	OperatorArgs []string
	// APIServerArgs are appended to kube-apiserver's flags, such as
	// --watch-cache-sizes=largedata.data.kubeshard.dev#0. Default: none.
	APIServerArgs []string
	// APIServerEnv is added to kube-apiserver's environment, such as
	// GOGC=400. Default: none.
	APIServerEnv []string
	// Kine runs kube-apiserver on kine (bin/k8s/kine, `make k8s-bins`) over a
	// throwaway PostgreSQL server of its own instead of etcd: the storage
	// layer of k3s, and the open counterpart of the seed's SQL storage. The
	// operator's store, with Postgres, is another server, so that each
	// one's memory and load are its own. Default: etcd.
	Kine bool
	// Postgres runs a throwaway PostgreSQL server on loopback for the run
	// (internal/testpg: the Debian package's binaries) and starts the
	// members with --store=postgres on it, the store the operator is meant
	// to run with: records shared by all members, so a new owner of a slot
	// finds its datasets. Default: the in-memory store, one per member.
	Postgres bool
	// Journals makes each member append one line per reconcile to
	// JournalDir()/<pod>.jsonl (the operator's --journal), for a check that
	// no two members reconciled one slot at once. Default: no journals.
	Journals bool
	// AuditLists makes kube-apiserver write an audit event for every list
	// and watch of LargeData to AuditLog(), with the client's user agent
	// and the request's URI (a watch with sendInitialEvents=true is a list
	// too): the members and the harness share the admin identity here, not
	// their programs.
	AuditLists bool
	// PeerSnapshots starts the members with peer snapshots (the operator's
	// --peer-address): a member that gains slots takes their objects from
	// the members serving them instead of listing them. Their metrics
	// servers share one certificate made here (for 127.0.0.1, its own CA),
	// and each shows the others a token of the operator's ServiceAccount,
	// whose ClusterRole lets it get the snapshot path. Default: off.
	PeerSnapshots bool
	// Progress receives one line per step; nil prints nothing.
	Progress io.Writer
}

// OperatorServiceAccount is the members' ServiceAccount in deploy/local.
const OperatorServiceAccount = "kubeshard-operator"

// auditPolicy records lists and watches of LargeData at the Metadata level
// (who, when, the URI, the response code) and nothing else.
const auditPolicy = `apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: ["RequestReceived"]
rules:
- level: Metadata
  verbs: ["list", "watch"]
  resources:
  - group: data.kubeshard.dev
    resources: ["largedata"]
- level: None
`

// Env is a running local cluster with the operator.
type Env struct {
	// Config reaches the API server as a cluster administrator.
	Config *rest.Config
	// Kubeconfig is the path of the admin kubeconfig.
	Kubeconfig string

	cluster *localcluster.Cluster
	// metricsToken lets its bearer scrape the members' metrics.
	metricsToken string
	postgres     *testpg.Server
	// kinePostgres holds the API server's objects, with Options.Kine.
	kinePostgres *testpg.Server
	runner       *podrunner.Runner
	journalDir   string
	auditLog     string
	stopRunner   context.CancelFunc
	runnerDone   chan error
}

// Start builds the operator and starts everything. ctx bounds the start;
// the processes run until Stop, which the caller must call also when Start
// fails (it stops what was started).
func Start(ctx context.Context, opts Options) (_ *Env, err error) {
	if opts.Dir == "" {
		return nil, errors.New("localenv: Options.Dir is required")
	}
	if opts.Members == 0 {
		opts.Members = 1
	}
	step := func(msg string) {
		if opts.Progress != nil {
			fmt.Fprintf(opts.Progress, "==> %s\n", msg)
		}
	}
	root, err := testenv.ModuleRoot()
	if err != nil {
		return nil, err
	}
	if err := os.RemoveAll(opts.Dir); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(opts.Dir, 0o755); err != nil {
		return nil, err
	}

	step("Building the operator")
	operator := filepath.Join(opts.Dir, "largedata-operator")
	build := exec.CommandContext(ctx, "go", "build", "-o", operator, "./cmd/largedata-operator")
	build.Dir = root
	if out, err := build.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("building the operator: %w\n%s", err, out)
	}

	clusterOpts := localcluster.Options{
		Dir: filepath.Join(opts.Dir, "cluster"), ExtraAPIServerFlags: opts.APIServerArgs, APIServerEnv: opts.APIServerEnv,
	}
	var auditLog string
	if opts.AuditLists {
		policy := filepath.Join(opts.Dir, "audit-policy.yaml")
		if err := os.WriteFile(policy, []byte(auditPolicy), 0o644); err != nil {
			return nil, err
		}
		auditLog = filepath.Join(opts.Dir, "audit.log")
		clusterOpts.ExtraAPIServerFlags = append(slices.Clone(opts.APIServerArgs),
			"--audit-policy-file="+policy, "--audit-log-path="+auditLog, "--audit-log-format=json")
	}
	var kinePG *testpg.Server
	if opts.Kine {
		step("Starting PostgreSQL on loopback for kine, the API server's storage")
		if kinePG, err = testpg.Start(ctx, testpg.Options{Database: "kine"}); err != nil {
			return nil, fmt.Errorf("starting PostgreSQL for kine: %w", err)
		}
		clusterOpts.KineDatabase = kinePG.URL()
		step("Starting kine, kube-apiserver and kube-controller-manager on loopback")
	} else {
		step("Starting etcd, kube-apiserver and kube-controller-manager on loopback")
	}
	cluster, err := localcluster.Start(ctx, clusterOpts)
	if err != nil {
		if kinePG != nil {
			err = errors.Join(err, kinePG.Stop())
		}
		return nil, err
	}
	env := &Env{Config: rest.CopyConfig(cluster.Config), Kubeconfig: cluster.KubeconfigPath, cluster: cluster, kinePostgres: kinePG, auditLog: auditLog}
	env.Config.QPS, env.Config.Burst = 200, 400
	defer func() {
		if err != nil {
			err = errors.Join(err, env.Stop())
		}
	}()
	operatorArgs := opts.OperatorArgs
	if opts.Journals {
		env.journalDir = filepath.Join(opts.Dir, "journals")
		if err := os.MkdirAll(env.journalDir, 0o755); err != nil {
			return nil, err
		}
		// The pod runner expands $(POD_NAME) in the args, as a kubelet does.
		operatorArgs = append(slices.Clone(operatorArgs), "--journal="+filepath.Join(env.journalDir, "$(POD_NAME).jsonl"))
	}
	if opts.Postgres {
		step("Starting PostgreSQL on loopback")
		env.postgres, err = testpg.Start(ctx, testpg.Options{Database: "largedata"})
		if err != nil {
			return nil, fmt.Errorf("starting PostgreSQL: %w", err)
		}
		// Eight connections per member: a batch holds one, the rest serve
		// concurrent reconciles; five members stay within the server's 100.
		pgURL, err := url.Parse(env.postgres.URL())
		if err != nil {
			return nil, fmt.Errorf("PostgreSQL's URL: %w", err)
		}
		q := pgURL.Query()
		q.Set("pool_max_conns", "8")
		pgURL.RawQuery = q.Encode()
		operatorArgs = append(slices.Clone(operatorArgs), "--store=postgres", "--postgres-url="+pgURL.String())
	}
	extraEnv := []string{}
	peerToken := filepath.Join(opts.Dir, "peer-token")
	if opts.PeerSnapshots {
		metricsCerts := filepath.Join(opts.Dir, "metrics-certs")
		if _, err := webhookcert.Write(metricsCerts, "kubeshard-loadtest-metrics"); err != nil {
			return nil, fmt.Errorf("writing the members' metrics certificate: %w", err)
		}
		extraEnv = append(extraEnv, "METRICS_CERT_DIR="+metricsCerts, "PEER_TOKEN_FILE="+peerToken)
		operatorArgs = append(slices.Clone(operatorArgs),
			"--metrics-cert-dir=$(METRICS_CERT_DIR)", "--peer-address=127.0.0.1:$(METRICS_PORT)",
			"--peer-ca-file=$(METRICS_CERT_DIR)/tls.crt", "--peer-token-file=$(PEER_TOKEN_FILE)")
	}
	c, err := client.New(env.Config, client.Options{Scheme: testenv.NewScheme()})
	if err != nil {
		return nil, err
	}

	step(fmt.Sprintf("Applying deploy/local with %d members", opts.Members))
	for _, args := range [][]string{
		{"apply", "--server-side", "-k", filepath.Join(root, "deploy", "base", "crd")},
		{"wait", "--for=condition=Established", "--timeout=60s", "crd", "--all"},
		{"apply", "--server-side", "-k", filepath.Join(root, "deploy", "local")},
	} {
		if out, err := cluster.Kubectl(ctx, args...); err != nil {
			return nil, fmt.Errorf("%w\n%s", err, out)
		}
	}
	// Member 0 serves the webhook on a free loopback port (not the fixed one
	// deploy/local names, so that several local clusters can run at once),
	// with a certificate made here that the API server trusts through the
	// caBundle.
	certDir := filepath.Join(opts.Dir, "webhook-certs")
	caBundle, err := webhookcert.Write(certDir, "kubeshard-loadtest-webhook")
	if err != nil {
		return nil, err
	}
	webhookPort, err := freePort()
	if err != nil {
		return nil, err
	}
	if err := pointWebhook(ctx, c, webhookPort, caBundle); err != nil {
		return nil, err
	}
	if err := configureStatefulSet(ctx, c, opts.Members, operatorArgs); err != nil {
		return nil, err
	}

	clientset, err := kubernetes.NewForConfig(env.Config)
	if err != nil {
		return nil, err
	}
	env.runner, err = podrunner.New(podrunner.Options{
		Client:       clientset,
		Namespace:    Namespace,
		Selector:     labels.SelectorFromSet(labels.Set{"app.kubernetes.io/name": StatefulSet}),
		Binary:       operator,
		Kubeconfig:   cluster.KubeconfigPath,
		LogDir:       filepath.Join(opts.Dir, "pods"),
		ExtraEnv:     append(extraEnv, "WEBHOOK_CERT_DIR="+certDir),
		WebhookPorts: map[string]int{StatefulSet + "-0": webhookPort},
	})
	if err != nil {
		return nil, err
	}
	if env.metricsToken, err = metricsToken(ctx, clientset); err != nil {
		return nil, err
	}
	if opts.PeerSnapshots {
		if err := writeServiceAccountToken(ctx, clientset, OperatorServiceAccount, peerToken); err != nil {
			return nil, err
		}
	}
	runCtx, stop := context.WithCancel(context.WithoutCancel(ctx))
	env.stopRunner, env.runnerDone = stop, make(chan error, 1)
	go func() { env.runnerDone <- env.runner.Run(runCtx) }()

	step(fmt.Sprintf("Waiting for %d members to share the ring", opts.Members))
	if err := WaitSettled(ctx, c, types.NamespacedName{Namespace: Namespace, Name: Ring}, opts.Members, 3*time.Minute); err != nil {
		return nil, err
	}
	if err := waitWebhook(ctx, c, time.Minute); err != nil {
		return nil, err
	}
	return env, nil
}

// waitWebhook waits until the slot-label webhook answers: until a dry-run
// create of a LargeData comes back labelled. Its failurePolicy is Ignore, so
// objects created before it listens are created without the label and the
// finalizer, and each costs the labeler's and the operator's writes.
func waitWebhook(ctx context.Context, c client.Client, timeout time.Duration) error {
	err := wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, timeout, true, func(ctx context.Context) (bool, error) {
		probe := &datav1alpha1.LargeData{
			ObjectMeta: metav1.ObjectMeta{Namespace: Namespace, Name: "webhook-probe"},
			Spec:       datav1alpha1.LargeDataSpec{Items: 1},
		}
		if err := c.Create(ctx, probe, client.DryRunAll); err != nil {
			return false, nil
		}
		_, labelled := probe.Labels[shardingv1alpha1.LabelSlot]
		return labelled, nil
	})
	if err != nil {
		return fmt.Errorf("waiting for the slot-label webhook to label a dry-run create: %w", err)
	}
	return nil
}

// configureStatefulSet sets the replicas and appends args to the operator
// container's.
func configureStatefulSet(ctx context.Context, c client.Client, replicas int, args []string) error {
	sts := &appsv1.StatefulSet{}
	if err := c.Get(ctx, types.NamespacedName{Namespace: Namespace, Name: StatefulSet}, sts); err != nil {
		return fmt.Errorf("reading the StatefulSet: %w", err)
	}
	patch := client.MergeFrom(sts.DeepCopy())
	r := int32(replicas)
	sts.Spec.Replicas = &r
	sts.Spec.Template.Spec.Containers[0].Args = append(sts.Spec.Template.Spec.Containers[0].Args, args...)
	if err := c.Patch(ctx, sts, patch); err != nil {
		return fmt.Errorf("configuring the StatefulSet: %w", err)
	}
	return nil
}

// pointWebhook makes the webhook configuration call 127.0.0.1:port and
// trust ca.
func pointWebhook(ctx context.Context, c client.Client, port int, ca []byte) error {
	mwc := &admissionregistrationv1.MutatingWebhookConfiguration{}
	if err := c.Get(ctx, types.NamespacedName{Name: "kubeshard-slot-label"}, mwc); err != nil {
		return fmt.Errorf("reading the webhook configuration: %w", err)
	}
	patch := client.MergeFrom(mwc.DeepCopy())
	for i := range mwc.Webhooks {
		cc := &mwc.Webhooks[i].ClientConfig
		cc.CABundle = ca
		if cc.URL != nil {
			u, err := url.Parse(*cc.URL)
			if err != nil {
				return fmt.Errorf("reading the webhook URL: %w", err)
			}
			u.Host = net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
			cc.URL = ptr.To(u.String())
		}
	}
	if err := c.Patch(ctx, mwc, patch); err != nil {
		return fmt.Errorf("setting the webhook's caBundle: %w", err)
	}
	return nil
}

// WaitSettled waits until the ring is Ready with n members and nothing moves.
func WaitSettled(ctx context.Context, c client.Client, ring types.NamespacedName, n int, timeout time.Duration) error {
	err := wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, timeout, true, func(ctx context.Context) (bool, error) {
		sr := &shardingv1alpha1.ShardRing{}
		if err := c.Get(ctx, ring, sr); err != nil {
			return false, nil
		}
		return Settled(sr, n), nil
	})
	if err != nil {
		return fmt.Errorf("waiting for the ring to settle with %d members: %w", n, err)
	}
	return nil
}

// MetricsScraper is the ServiceAccount, in Namespace, whose token Start
// makes for scraping the members' metrics, bound to the ClusterRole
// MetricsReaderRole as Prometheus's would be.
const (
	MetricsScraper    = "kubeshard-metrics-scraper"
	MetricsReaderRole = "largedata-operator-metrics-reader"
)

// metricsToken creates MetricsScraper with the ClusterRole MetricsReaderRole
// and returns a token of it, valid for a day.
func metricsToken(ctx context.Context, cs kubernetes.Interface) (string, error) {
	sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: Namespace, Name: MetricsScraper}}
	if _, err := cs.CoreV1().ServiceAccounts(Namespace).Create(ctx, sa, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return "", fmt.Errorf("creating the metrics scraper's ServiceAccount: %w", err)
	}
	crb := &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: MetricsScraper},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: MetricsReaderRole},
		Subjects:   []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Namespace: Namespace, Name: MetricsScraper}},
	}
	if _, err := cs.RbacV1().ClusterRoleBindings().Create(ctx, crb, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return "", fmt.Errorf("binding the metrics scraper to %s: %w", MetricsReaderRole, err)
	}
	tr, err := cs.CoreV1().ServiceAccounts(Namespace).CreateToken(ctx, MetricsScraper, &authenticationv1.TokenRequest{
		Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: ptr.To[int64](24 * 3600)},
	}, metav1.CreateOptions{})
	if err != nil {
		return "", fmt.Errorf("making a token for the metrics scraper: %w", err)
	}
	return tr.Status.Token, nil
}

// writeServiceAccountToken writes a token of the ServiceAccount sa in
// Namespace, valid for a day, to path.
func writeServiceAccountToken(ctx context.Context, cs kubernetes.Interface, sa, path string) error {
	tr, err := cs.CoreV1().ServiceAccounts(Namespace).CreateToken(ctx, sa, &authenticationv1.TokenRequest{
		Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: ptr.To[int64](24 * 3600)},
	}, metav1.CreateOptions{})
	if err != nil {
		return fmt.Errorf("making a token of %s: %w", sa, err)
	}
	return os.WriteFile(path, []byte(tr.Status.Token), 0o600)
}

// MetricsToken is a bearer token the members' metrics endpoints accept
// (their HTTPS endpoints authenticate and authorize every scrape).
func (e *Env) MetricsToken() string { return e.metricsToken }

// MemberMetrics fetches a member's metrics from the loopback port its
// process listens on, with MetricsToken.
func (e *Env) MemberMetrics(ctx context.Context, member string) ([]byte, error) {
	url, ok := e.MetricsURLs([]string{member})[member]
	if !ok {
		return nil, fmt.Errorf("member %s is not running", member)
	}
	return FetchURL(ctx, url, e.metricsToken)
}

// MetricsURLs returns each running member's metrics URL, by member.
func (e *Env) MetricsURLs(members []string) map[string]string {
	out := map[string]string{}
	for _, m := range members {
		if ports, ok := e.runner.Ports(Namespace + "/" + m); ok {
			out[m] = fmt.Sprintf("https://127.0.0.1:%d/metrics", ports.Metrics)
		}
	}
	return out
}

// MetricsTargets is what WriteMetricsURLs writes: the members' metrics URLs
// and the bearer token they accept.
type MetricsTargets struct {
	Token string            `json:"token"`
	URLs  map[string]string `json:"urls"`
}

// WriteMetricsURLs writes MetricsURLs of the first max members and
// MetricsToken as JSON (MetricsTargets) into path, readable by its owner
// only, for a `measure` run in another process.
func (e *Env) WriteMetricsURLs(path string, max int) error {
	var names []string
	for i := range max {
		names = append(names, fmt.Sprintf("%s-%d", StatefulSet, i))
	}
	data, err := json.MarshalIndent(MetricsTargets{Token: e.metricsToken, URLs: e.MetricsURLs(names)}, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, data, 0o600)
}

// Kubectl runs bin/k8s/kubectl against the cluster and returns its output.
func (e *Env) Kubectl(ctx context.Context, args ...string) ([]byte, error) {
	return e.cluster.Kubectl(ctx, args...)
}

// LogDir is where the members' logs are.
func (e *Env) LogDir() string { return e.runner.LogDir() }

// AuditLog is kube-apiserver's audit log with Options.AuditLists.
func (e *Env) AuditLog() string { return e.auditLog }

// JournalDir holds the members' reconcile journals with Options.Journals.
func (e *Env) JournalDir() string { return e.journalDir }

// Signal sends sig to a member's process: SIGKILL crashes it (the pod
// runner restarts it, as a kubelet would), SIGSTOP freezes it until
// SIGCONT.
func (e *Env) Signal(member string, sig syscall.Signal) error { return e.runner.Signal(member, sig) }

// PID returns a member's process id, or false while it has none (between
// an exit and the restart).
func (e *Env) PID(member string) (int, bool) { return e.runner.PID(member) }

// RestartAPIServer stops kube-apiserver and starts it again with the same
// flags and storage; it returns when the new process is ready.
func (e *Env) RestartAPIServer(ctx context.Context) error { return e.cluster.RestartAPIServer(ctx) }

// Stop stops the members, then the control plane.
func (e *Env) Stop() error {
	var errs []error
	if e.stopRunner != nil {
		e.stopRunner()
		if err := <-e.runnerDone; err != nil && !errors.Is(err, context.Canceled) {
			errs = append(errs, fmt.Errorf("stopping the members: %w", err))
		}
		e.stopRunner = nil
	}
	if err := e.cluster.Stop(); err != nil {
		errs = append(errs, err)
	}
	if e.postgres != nil {
		if err := e.postgres.Stop(); err != nil {
			errs = append(errs, fmt.Errorf("stopping PostgreSQL: %w", err))
		}
		e.postgres = nil
	}
	if e.kinePostgres != nil {
		if err := e.kinePostgres.Stop(); err != nil {
			errs = append(errs, fmt.Errorf("stopping kine's PostgreSQL: %w", err))
		}
		e.kinePostgres = nil
	}
	return errors.Join(errs...)
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("finding a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// scrapeClient trusts the members' self-signed metrics certificates: they
// listen on loopback, and what a scrape proves is its token.
var scrapeClient = &http.Client{Transport: &http.Transport{
	TLSClientConfig: &tls.Config{InsecureSkipVerify: true}, //nolint:gosec // loopback, self-signed
}}

func fetch(ctx context.Context, url, token string) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := scrapeClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	return io.ReadAll(resp.Body)
}

// FetchURL fetches a metrics URL with a bearer token (none if empty); for
// MemberMetrics of a cluster started by another process.
func FetchURL(ctx context.Context, url, token string) ([]byte, error) {
	if !strings.HasPrefix(url, "http://") && !strings.HasPrefix(url, "https://") {
		return nil, fmt.Errorf("not an http URL: %q", url)
	}
	return fetch(ctx, url, token)
}

// Settled reports whether the ring is Ready with n members that each own
// their share of the slots and no slot moving: a rebalance is over.
func Settled(sr *shardingv1alpha1.ShardRing, n int) bool {
	if int(sr.Status.MemberCount) != n || int(sr.Status.ReadyMembers) != n || sr.Status.MovingSlots != 0 {
		return false
	}
	for _, m := range sr.Status.Members {
		if m.State == shardingv1alpha1.MemberReady && int(m.SlotCount) < int(sr.Spec.Slots)/n {
			return false
		}
	}
	for _, c := range sr.Status.Conditions {
		if c.Type == shardingv1alpha1.ConditionReady {
			return c.Status == metav1.ConditionTrue
		}
	}
	return false
}
