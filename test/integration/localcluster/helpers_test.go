package localcluster

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr/testr"
	logf "sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/kubeshard/kubeshard/internal/testenv"
	"github.com/kubeshard/kubeshard/test/localcluster"
)

// testContext returns t.Context() carrying a logger that writes to the test's
// log, shown for failed tests and with -v.
func testContext(t *testing.T) context.Context {
	return logf.IntoContext(t.Context(), testr.New(t))
}

// startCluster starts a control plane that is stopped when the test ends,
// and whose log files end up in the test's log if it failed.
func startCluster(ctx context.Context, t *testing.T) *localcluster.Cluster {
	t.Helper()
	dir := t.TempDir()
	start := time.Now()
	c, err := localcluster.Start(ctx, localcluster.Options{Dir: dir})
	if err != nil {
		t.Fatalf("starting the cluster: %v", err)
	}
	t.Logf("Cluster started in %s", time.Since(start).Round(time.Millisecond))
	t.Cleanup(func() {
		if err := c.Stop(); err != nil {
			t.Errorf("stopping the cluster: %v", err)
		}
		logTails(t, dir)
	})
	return c
}

// logTails writes the end of every log file in dir to the test's log if the
// test failed: t.TempDir removes them afterwards.
func logTails(t *testing.T, dir string) {
	if !t.Failed() {
		return
	}
	paths, _ := filepath.Glob(filepath.Join(dir, "*.log"))
	for _, path := range paths {
		data, err := os.ReadFile(path)
		if err != nil {
			continue
		}
		lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
		if len(lines) > 30 {
			lines = lines[len(lines)-30:]
		}
		t.Logf("End of %s:\n%s", filepath.Base(path), strings.Join(lines, "\n"))
	}
}

// buildSleeper builds test/podrunner/testdata/sleeper into a temporary folder.
func buildSleeper(ctx context.Context, t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "sleeper")
	start := time.Now()
	cmd := exec.CommandContext(ctx, "go", "build", "-o", bin, "github.com/kubeshard/kubeshard/test/podrunner/testdata/sleeper")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("building the sleeper: %v\n%s", err, out)
	}
	t.Logf("Built the sleeper in %s", time.Since(start).Round(time.Millisecond))
	return bin
}

// eventually waits with testenv.Eventually until check returns nil, with
// check's last error as the reason when it fails, and logs how long that
// took. check's context ends with the wait, so that a request to a server
// that hangs cannot outlast it.
func eventually(ctx context.Context, t *testing.T, timeout time.Duration, what string, check func(ctx context.Context) error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	why := ""
	took := testenv.Eventually(t, timeout, what, func() (bool, string) {
		err := check(ctx)
		if err == nil {
			return true, ""
		}
		// The last check runs after ctx ended: its error would only say so.
		if ctx.Err() == nil || why == "" {
			why = err.Error()
		}
		return false, why
	})
	t.Logf("%s after %s", what, took.Round(time.Millisecond))
}
