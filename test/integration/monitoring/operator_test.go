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

	"k8s.io/apimachinery/pkg/types"
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
func startOperator(t *testing.T, replicas int) *operatorSet {
	t.Helper()
	started := time.Now()
	// The cluster outlives the test's context, which ends before cleanups run.
	env, err := localenv.Start(context.WithoutCancel(t.Context()), localenv.Options{Dir: t.TempDir(), Members: replicas})
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

func (s *operatorSet) logTails() {
	logs, _ := filepath.Glob(filepath.Join(s.env.LogDir(), "*.log"))
	for _, path := range logs {
		out, _ := os.ReadFile(path)
		s.t.Logf("%s:\n%s", filepath.Base(path), tail(out, 30))
	}
}
