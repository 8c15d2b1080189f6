package monitoring

import (
	"context"
	"encoding/json"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/kubeshard/kubeshard/internal/localenv"
	"github.com/kubeshard/kubeshard/internal/testenv"
)

// Names from deploy/local, which the test applies as a user would.
const (
	operatorNS  = localenv.Namespace
	ringName    = localenv.Ring
	statefulSet = localenv.StatefulSet
)

// operatorSet is the LargeData operator from deploy/local on a local control
// plane, its StatefulSet's pods run as local processes (internal/localenv).
type operatorSet struct {
	t   *testing.T
	env *localenv.Env
	c   client.Client
}

// startOperator starts a local control plane, applies deploy/local with
// replicas members and runs their pods; member 0 serves the slot-label
// webhook. The test's cleanup stops every process.
func startOperator(t *testing.T, replicas int, operatorArgs ...string) *operatorSet {
	t.Helper()
	started := time.Now()
	// The cluster outlives the test's context, which ends before cleanups run.
	env, err := localenv.Start(context.WithoutCancel(t.Context()), localenv.Options{Dir: t.TempDir(), Members: replicas, OperatorArgs: operatorArgs})
	s := &operatorSet{t: t, env: env}
	t.Cleanup(func() {
		if env == nil {
			return
		}
		if t.Failed() {
			s.logTails()
		}
		if err := env.Stop(); err != nil {
			t.Errorf("stopping the local cluster and the operator: %v", err)
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	if s.c, err = client.New(env.Config, client.Options{Scheme: testenv.NewScheme()}); err != nil {
		t.Fatal(err)
	}
	t.Logf("started the local control plane and %d members in %s", replicas, time.Since(started).Round(time.Millisecond))
	return s
}

// scale scales the StatefulSet as a user would.
func (s *operatorSet) scale(n int) {
	s.t.Helper()
	args := []string{"-n", operatorNS, "scale", "statefulset", statefulSet, "--replicas=" + strconv.Itoa(n)}
	if out, err := s.env.Kubectl(s.t.Context(), args...); err != nil {
		s.t.Fatalf("kubectl %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// waitSettled waits until the ring is Ready with n members that each own
// their share of the slots, and nothing moves; it returns how long that took.
func (s *operatorSet) waitSettled(n int, timeout time.Duration) time.Duration {
	s.t.Helper()
	start := time.Now()
	ring := types.NamespacedName{Namespace: operatorNS, Name: ringName}
	if err := localenv.WaitSettled(s.t.Context(), s.c, ring, n, timeout); err != nil {
		s.t.Fatal(err)
	}
	return time.Since(start)
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
			if metrics, ok := s.env.MetricsURLs([]string{pod})[pod]; ok {
				u, err := url.Parse(metrics)
				if err != nil {
					continue
				}
				targets = append(targets, fileTarget{
					Targets: []string{u.Host},
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

// tokenFile writes the token the members' metrics endpoints accept into dir
// and returns its path, for Prometheus's credentials_file.
func (s *operatorSet) tokenFile(dir string) string {
	s.t.Helper()
	path := filepath.Join(dir, "metrics-token")
	if err := os.WriteFile(path, []byte(s.env.MetricsToken()), 0o600); err != nil {
		s.t.Fatal(err)
	}
	return path
}

func (s *operatorSet) logTails() {
	logs, _ := filepath.Glob(filepath.Join(s.env.LogDir(), "*.log"))
	for _, path := range logs {
		out, _ := os.ReadFile(path)
		s.t.Logf("%s:\n%s", filepath.Base(path), tail(out, 30))
	}
}

// checkMetricsAccess scrapes a member's metrics as three clients: with no
// token, with the token of a ServiceAccount that may not get /metrics, and
// with the scraper's token (the ClusterRole largedata-operator-metrics-reader).
// Only the last may read them.
func (s *operatorSet) checkMetricsAccess(member string) {
	s.t.Helper()
	ctx := s.t.Context()
	url, ok := s.env.MetricsURLs([]string{member})[member]
	if !ok {
		s.t.Fatalf("member %s is not running", member)
	}
	if !strings.HasPrefix(url, "https://") {
		s.t.Errorf("member %s serves its metrics at %s, not over HTTPS", member, url)
	}
	cs, err := kubernetes.NewForConfig(s.env.Config)
	if err != nil {
		s.t.Fatal(err)
	}
	const stranger = "not-a-metrics-reader"
	sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: operatorNS, Name: stranger}}
	if _, err := cs.CoreV1().ServiceAccounts(operatorNS).Create(ctx, sa, metav1.CreateOptions{}); err != nil {
		s.t.Fatal(err)
	}
	tr, err := cs.CoreV1().ServiceAccounts(operatorNS).CreateToken(ctx, stranger, &authenticationv1.TokenRequest{}, metav1.CreateOptions{})
	if err != nil {
		s.t.Fatal(err)
	}
	for _, tc := range []struct {
		who, token string
		refusal    string // the status of a refusal; "" if allowed
	}{
		{"an anonymous scraper", "", "401 Unauthorized"},
		{"a ServiceAccount without the metrics-reader role", tr.Status.Token, "403 Forbidden"},
		{"the scraper bound to the metrics-reader role", s.env.MetricsToken(), ""},
	} {
		body, err := localenv.FetchURL(ctx, url, tc.token)
		switch {
		case tc.refusal == "" && (err != nil || !strings.Contains(string(body), "kubeshard_member_")):
			s.t.Errorf("%s could not read %s's metrics: %v", tc.who, member, err)
		case tc.refusal != "" && (err == nil || !strings.Contains(err.Error(), tc.refusal)):
			s.t.Errorf("%s reading %s's metrics: %v (%d bytes); want %s", tc.who, member, err, len(body), tc.refusal)
		}
	}
}
