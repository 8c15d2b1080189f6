package monitoring

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"sigs.k8s.io/controller-runtime/pkg/client"

	shardingv1alpha1 "github.com/kubeshard/kubeshard/api/sharding/v1alpha1"
	"github.com/kubeshard/kubeshard/internal/testenv"
	"github.com/kubeshard/kubeshard/internal/webhookcert"
	"github.com/kubeshard/kubeshard/test/localcluster"
	"github.com/kubeshard/kubeshard/test/podrunner"
)

// Names from deploy/local, which the test applies as a user would.
const (
	operatorNS  = "kubeshard-system"
	ringName    = "largedata"
	statefulSet = "largedata-operator"
	webhookName = "kubeshard-slot-label"
)

// operatorSet is the LargeData operator from deploy/local on a local control
// plane, its StatefulSet's pods run as local processes.
type operatorSet struct {
	t       *testing.T
	cluster *localcluster.Cluster
	c       client.Client
	runner  *podrunner.Runner
}

// startOperator starts a local control plane, applies deploy/local with
// replicas members and runs their pods. Member 0 serves the slot-label
// webhook on a free loopback port with a certificate made here. The test's
// cleanup stops every process.
func startOperator(t *testing.T, replicas int) *operatorSet {
	t.Helper()
	ctx := t.Context()
	root, err := testenv.ModuleRoot()
	if err != nil {
		t.Fatal(err)
	}
	work := t.TempDir()
	binary := filepath.Join(work, "largedata-operator")
	build := exec.CommandContext(ctx, "go", "build", "-o", binary, "./cmd/largedata-operator")
	build.Dir = root
	started := time.Now()
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("building the operator: %v\n%s", err, out)
	}
	t.Logf("built the operator in %s", time.Since(started).Round(time.Millisecond))
	started = time.Now()

	// The cluster outlives the test's context, which ends before cleanups run.
	cluster, err := localcluster.Start(context.WithoutCancel(ctx), localcluster.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := cluster.Stop(); err != nil {
			t.Errorf("stopping the local cluster: %v", err)
		}
	})
	c, err := client.New(cluster.Config, client.Options{Scheme: testenv.NewScheme()})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("started the local control plane in %s", time.Since(started).Round(time.Millisecond))
	s := &operatorSet{t: t, cluster: cluster, c: c}
	// CRDs first: the ShardRing in the overlay needs its kind established.
	s.kubectl("apply", "--server-side", "-k", filepath.Join(root, "deploy", "base", "crd"))
	s.kubectl("wait", "--for=condition=Established", "--timeout=60s", "crd", "--all")
	s.kubectl("apply", "--server-side", "-k", filepath.Join(root, "deploy", "local"))
	// Before any pod runs: the StatefulSet controller deletes the extra
	// pods, which no kubelet has bound yet.
	s.scale(replicas)

	// deploy/local calls the webhook at a fixed port that make demo uses;
	// this test must not collide with a demo, so it moves the URL.
	certDir := filepath.Join(work, "webhook-certs")
	ca, err := webhookcert.Write(certDir, "kubeshard-monitoring-test")
	if err != nil {
		t.Fatal(err)
	}
	webhookPort, err := freePort()
	if err != nil {
		t.Fatal(err)
	}
	s.pointWebhook(fmt.Sprintf("https://127.0.0.1:%d/mutate-slot-label", webhookPort), ca)

	cs, err := kubernetes.NewForConfig(cluster.Config)
	if err != nil {
		t.Fatal(err)
	}
	s.runner, err = podrunner.New(podrunner.Options{
		Client:       cs,
		Namespace:    operatorNS,
		Selector:     labels.SelectorFromSet(labels.Set{"app.kubernetes.io/name": statefulSet}),
		Binary:       binary,
		Kubeconfig:   cluster.KubeconfigPath,
		LogDir:       filepath.Join(work, "pods"),
		ExtraEnv:     []string{"WEBHOOK_CERT_DIR=" + certDir},
		WebhookPorts: map[string]int{statefulSet + "-0": webhookPort},
	})
	if err != nil {
		t.Fatal(err)
	}
	runCtx, stop := context.WithCancel(context.WithoutCancel(ctx))
	done := make(chan error, 1)
	go func() { done <- s.runner.Run(runCtx) }()
	t.Cleanup(func() {
		stop()
		if err := <-done; err != nil {
			t.Errorf("running the operator's pods: %v", err)
		}
		if t.Failed() {
			s.logTails()
		}
	})
	return s
}

func (s *operatorSet) kubectl(args ...string) {
	s.t.Helper()
	if out, err := s.cluster.Kubectl(s.t.Context(), args...); err != nil {
		s.t.Fatalf("kubectl %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// scale scales the StatefulSet as a user would.
func (s *operatorSet) scale(n int) {
	s.t.Helper()
	s.kubectl("-n", operatorNS, "scale", "statefulset", statefulSet, "--replicas="+strconv.Itoa(n))
}

func (s *operatorSet) pointWebhook(url string, caBundle []byte) {
	s.t.Helper()
	mwc := &admissionregistrationv1.MutatingWebhookConfiguration{}
	if err := s.c.Get(s.t.Context(), types.NamespacedName{Name: webhookName}, mwc); err != nil {
		s.t.Fatalf("reading the webhook configuration: %v", err)
	}
	patch := client.MergeFrom(mwc.DeepCopy())
	for i := range mwc.Webhooks {
		mwc.Webhooks[i].ClientConfig = admissionregistrationv1.WebhookClientConfig{URL: &url, CABundle: caBundle}
	}
	if err := s.c.Patch(s.t.Context(), mwc, patch); err != nil {
		s.t.Fatalf("pointing the webhook at member 0: %v", err)
	}
}

// ring reads the ShardRing.
func (s *operatorSet) ring() (*shardingv1alpha1.ShardRing, error) {
	sr := &shardingv1alpha1.ShardRing{}
	err := s.c.Get(s.t.Context(), types.NamespacedName{Namespace: operatorNS, Name: ringName}, sr)
	return sr, err
}

// waitSettled waits until the ring is Ready with n members that each own
// their share of the slots, and nothing moves.
func (s *operatorSet) waitSettled(n int, timeout time.Duration) time.Duration {
	s.t.Helper()
	start := time.Now()
	why := ""
	for time.Since(start) < timeout {
		sr, err := s.ring()
		switch {
		case err != nil:
			why = err.Error()
		case int(sr.Status.MemberCount) != n || sr.Status.MovingSlots != 0:
			why = fmt.Sprintf("%d members, %d slots moving", sr.Status.MemberCount, sr.Status.MovingSlots)
		case !ready(sr):
			why = "not Ready"
		default:
			balanced := true
			for _, m := range sr.Status.Members {
				balanced = balanced && int(m.SlotCount) >= int(sr.Spec.Slots)/n
			}
			if balanced {
				return time.Since(start)
			}
			why = "slots not balanced yet"
		}
		select {
		case <-s.t.Context().Done():
			s.t.Fatal(s.t.Context().Err())
		case <-time.After(200 * time.Millisecond):
		}
	}
	s.t.Fatalf("the ring did not settle on %d members within %s: %s", n, timeout, why)
	return 0
}

func ready(sr *shardingv1alpha1.ShardRing) bool {
	for _, c := range sr.Status.Conditions {
		if c.Type == shardingv1alpha1.ConditionReady {
			return c.Status == metav1.ConditionTrue
		}
	}
	return false
}

// fileTarget is one entry of a Prometheus file_sd file.
type fileTarget struct {
	Targets []string          `json:"targets"`
	Labels  map[string]string `json:"labels"`
}

// writeTargets keeps path, a Prometheus file_sd file, listing the metrics
// endpoint of every pod the runner runs, with the namespace and pod labels
// that the Prometheus Operator gives the targets of a ServiceMonitor. It
// returns when ctx ends.
func (s *operatorSet) writeTargets(ctx context.Context, path string, maxPods int) {
	last := ""
	for {
		targets := []fileTarget{}
		for i := range maxPods {
			pod := fmt.Sprintf("%s-%d", statefulSet, i)
			if ports, ok := s.runner.Ports(operatorNS + "/" + pod); ok {
				targets = append(targets, fileTarget{
					Targets: []string{net.JoinHostPort("127.0.0.1", strconv.Itoa(ports.Metrics))},
					Labels:  map[string]string{"namespace": operatorNS, "pod": pod},
				})
			}
		}
		data, _ := json.Marshal(targets)
		if string(data) != last {
			// Prometheus reads the file when it changes: replace it whole.
			tmp := path + ".tmp"
			if err := os.WriteFile(tmp, data, 0o600); err == nil && os.Rename(tmp, path) == nil {
				last = string(data)
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(250 * time.Millisecond):
		}
	}
}

func (s *operatorSet) logTails() {
	logs, _ := filepath.Glob(filepath.Join(s.runner.LogDir(), "*.log"))
	for _, path := range logs {
		out, _ := os.ReadFile(path)
		s.t.Logf("%s:\n%s", filepath.Base(path), tail(out, 30))
	}
}
