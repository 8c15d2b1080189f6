package monitoring

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	utilyaml "k8s.io/apimachinery/pkg/util/yaml"

	"github.com/kubeshard/kubeshard/internal/testenv"
	"github.com/kubeshard/kubeshard/internal/testredis"
)

const (
	// scrapeInterval is the test's; a real ServiceMonitor scrapes every 30 s.
	scrapeInterval = 2 * time.Second
	// step is the resolution of the test's range queries, Grafana's
	// $__interval for them.
	step = 2 * time.Second
	// rateInterval is what Grafana substitutes for $__rate_interval:
	// max($__interval + scrape interval, 4 * scrape interval).
	rateInterval = 4 * scrapeInterval
	// objects is the load: half created before the scale event, half during.
	objects = 300
)

// TestDashboardsAndAlertsOnPrometheus runs Prometheus against the operator
// from deploy/local (two members, then kubectl scale to three) during a load
// of a few hundred creates and updates, then evaluates every query of every
// dashboard as Grafana would (variables resolved through label_values,
// $__rate_interval and friends substituted) and every alert rule: each must
// parse, and each panel query must return data.
func TestDashboardsAndAlertsOnPrometheus(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a local control plane, operator members and Prometheus")
	}
	binary, err := exec.LookPath("prometheus")
	if err != nil {
		testenv.MissingDependency(t, "Prometheus", err)
	}
	promtool, err := exec.LookPath("promtool")
	if err != nil {
		testenv.MissingDependency(t, "Prometheus's promtool", err)
	}
	ctx := t.Context()
	dashboards := loadDashboards(t)
	dir := t.TempDir()
	rulesFile := writeRules(t, dir)
	if out, err := exec.CommandContext(ctx, promtool, "check", "rules", rulesFile).CombinedOutput(); err != nil {
		t.Fatalf("promtool check rules: %v\n%s", err, out)
	}

	// The members read the streams of a few datasets, so that the stream
	// panels have data.
	rs, err := testredis.Start(ctx)
	if errors.Is(err, testredis.ErrNotInstalled) {
		testenv.MissingDependency(t, "Redis", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = rs.Stop() })

	start := time.Now()
	set := startOperator(t, 2, "--stream-redis-address="+rs.Addr(), "--stream-poll-interval=200ms", "--stream-status-interval=2s")
	exporter := startLoadExporter(t)
	targets := filepath.Join(dir, "targets.json")
	targetsCtx, stopTargets := context.WithCancel(ctx)
	targetsDone := make(chan struct{})
	go func() {
		defer close(targetsDone)
		set.writeTargets(targetsCtx, targets, 3)
	}()
	t.Cleanup(func() {
		stopTargets()
		<-targetsDone
	})
	prom := startPrometheus(t, binary, dir, fmt.Sprintf(`global:
  scrape_interval: %[1]s
  scrape_timeout: %[1]s
  evaluation_interval: %[1]s
rule_files:
- %[2]s
scrape_configs:
# As the Prometheus Operator names the job of a ServiceMonitor: after the
# Service, which the alerts rely on.
- job_name: largedata-operator
  # The members serve their metrics over HTTPS, with self-signed
  # certificates, to bearers of a token allowed to get /metrics.
  scheme: https
  authorization:
    credentials_file: %[5]s
  tls_config:
    insecure_skip_verify: true
  file_sd_configs:
  - files:
    - %[3]s
    refresh_interval: 1s
- job_name: kubeshard-loadtest
  static_configs:
  - targets:
    - %[4]s
`, scrapeInterval, rulesFile, targets, exporter.addr, set.tokenFile(dir)))

	settled2 := set.waitSettled(2, 90*time.Second)
	set.checkMetricsAccess(statefulSet + "-0")
	ld := newLoad(t, set.c, "load", exporter)
	stopStreams := feedStreams(t, set.c, rs, "load", 10, 50)
	names := make([]string, objects)
	for i := range names {
		names[i] = fmt.Sprintf("dataset-%04d", i)
	}
	ld.create(names[:objects/2], 40)
	scaled := time.Now()
	set.scale(3)
	ld.create(names[objects/2:], 40)
	ld.update(names[:objects/3], 40)
	set.waitSettled(3, 90*time.Second)
	settled3 := time.Since(scaled) // at most: the wait began after the load
	took := ld.waitReconciled(90 * time.Second)
	reconciled := time.Since(scaled)
	streamed := stopStreams()
	if streamed == 0 {
		t.Error("the stream datasets' statuses show no entry ingested")
	}
	// Scrapes after the load, so that every rate window after the scale
	// event is filled.
	waitScraped(t, prom, 3)
	time.Sleep(rateInterval + scrapeInterval)
	end := time.Now()

	queries, empty := 0, 0
	for _, d := range dashboards {
		vars := resolveVariables(t, prom, d, start, end)
		for _, p := range d.allPanels() {
			for _, tg := range p.Targets {
				queries++
				expr := substitute(tg.Expr, vars, start, end)
				res, err := prom.queryRange(ctx, expr, start, end, step)
				switch {
				case err != nil:
					t.Errorf("%s, panel %q, query %s: %v\n  query: %s", d.file, p.Title, tg.RefID, err, expr)
				case !hasNumbers(res):
					empty++
					t.Errorf("%s, panel %q, query %s: no data\n  query: %s", d.file, p.Title, tg.RefID, expr)
				}
			}
		}
	}

	checkAlertRules(t, prom, rulesFile, end)
	checkFigures(t, prom, end)
	rebalance, handoverP99 := ringDurations(t, prom, end)
	slices.Sort(took)
	t.Logf("FIGURES monitoring: ring settled on 2 members in %s; %d objects created and %d updated at 40/s; "+
		"after kubectl scale to 3 the ring had settled within %s and the load was reconciled within %s; "+
		"the coordinator's rebalance took %s, handover p99 %s; time to reconciled p50 %s p99 %s; "+
		"%d stream entries ingested; %d dashboard queries over %s evaluated, %d empty; test %s",
		settled2.Round(time.Millisecond), objects, objects/3, settled3.Round(time.Millisecond), reconciled.Round(time.Millisecond), rebalance, handoverP99,
		percentile(took, 0.5), percentile(took, 0.99), streamed, queries, end.Sub(start).Round(time.Second), empty, time.Since(start).Round(time.Second))
}

// writeRules writes the PrometheusRule's groups as a Prometheus rules file.
func writeRules(t *testing.T, dir string) string {
	t.Helper()
	root, err := testenv.ModuleRoot()
	if err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(filepath.Join(root, "deploy", "monitoring", "prometheusrule.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var rule struct {
		Spec struct {
			Groups []any `json:"groups"`
		} `json:"spec"`
	}
	if err := utilyaml.Unmarshal(data, &rule); err != nil {
		t.Fatal(err)
	}
	if len(rule.Spec.Groups) == 0 {
		t.Fatal("the PrometheusRule has no groups")
	}
	// JSON is YAML: Prometheus reads it as a rules file.
	out, err := json.Marshal(map[string]any{"groups": rule.Spec.Groups})
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "rules.yaml")
	if err := os.WriteFile(path, out, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// waitScraped waits until Prometheus scrapes members operator members.
func waitScraped(t *testing.T, prom *promServer, members int) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		res, err := prom.query(t.Context(), `sum(up{job="largedata-operator"})`, time.Now())
		if err == nil && len(res) == 1 && res[0].number() == float64(members) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("Prometheus does not scrape %d members (sum(up) = %v, %v)", members, res, err)
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// resolveVariables resolves a dashboard's query variables in order, as
// Grafana does: label_values(selector, label) through the label values API,
// with the variables before it substituted. A single-value variable takes
// the first value; a multi-value one with All takes its allValue or, as
// Grafana does without one, a regex of every value.
func resolveVariables(t *testing.T, prom *promServer, d dashboard, start, end time.Time) map[string]string {
	t.Helper()
	vars := map[string]string{}
	for _, v := range d.Templating.List {
		if v.Type != "query" {
			continue
		}
		m := labelValues.FindStringSubmatch(v.query())
		if m == nil {
			t.Fatalf("%s: variable %s: cannot read %q", d.file, v.Name, v.query())
		}
		selector := substitute(m[1], vars, start, end)
		values, err := prom.labelValues(t.Context(), m[2], selector, start, end)
		if err != nil {
			t.Fatalf("%s: variable %s: %v", d.file, v.Name, err)
		}
		if len(values) == 0 {
			t.Fatalf("%s: variable %s has no values (label_values(%s, %s))", d.file, v.Name, selector, m[2])
		}
		slices.Sort(values)
		switch {
		case v.IncludeAll && v.AllValue != "":
			vars[v.Name] = v.AllValue
		case v.IncludeAll || v.Multi:
			quoted := make([]string, len(values))
			for i, val := range values {
				quoted[i] = regexp.QuoteMeta(val)
			}
			vars[v.Name] = "(" + strings.Join(quoted, "|") + ")"
		default:
			vars[v.Name] = values[0]
		}
		if v.Name == "member" {
			want := []string{statefulSet + "-0", statefulSet + "-1", statefulSet + "-2"}
			if !slices.Equal(values, want) {
				t.Errorf("%s: the member variable offers %v, want %v", d.file, values, want)
			}
		}
	}
	return vars
}

// substitute replaces a query's variables, the dashboard's and Grafana's
// built-in ones, with their values for a range query over [start, end].
func substitute(expr string, vars map[string]string, start, end time.Time) string {
	rng := end.Sub(start).Round(time.Second)
	builtin := map[string]string{
		"__rate_interval": promDuration(rateInterval),
		"__interval":      promDuration(step),
		"__interval_ms":   strconv.FormatInt(step.Milliseconds(), 10),
		"__range":         promDuration(rng),
		"__range_s":       strconv.FormatInt(int64(rng.Seconds()), 10),
		"__range_ms":      strconv.FormatInt(rng.Milliseconds(), 10),
	}
	return varRef.ReplaceAllStringFunc(expr, func(ref string) string {
		m := varRef.FindStringSubmatch(ref)
		name := m[1] + m[2]
		if v, ok := vars[name]; ok {
			return v
		}
		if v, ok := builtin[name]; ok {
			return v
		}
		return ref // left for Prometheus to reject
	})
}

func promDuration(d time.Duration) string {
	return strconv.FormatInt(int64(d/time.Second), 10) + "s"
}

// hasNumbers reports whether a range query's result has at least one
// value that is a number.
func hasNumbers(res []series) bool {
	for _, s := range res {
		if len(s.numbers()) > 0 {
			return true
		}
	}
	return false
}

// checkAlertRules checks that Prometheus loaded every alert rule of the
// PrometheusRule and evaluates each without error, and evaluates each
// expression once more through the query API.
func checkAlertRules(t *testing.T, prom *promServer, rulesFile string, at time.Time) {
	t.Helper()
	data, err := os.ReadFile(rulesFile)
	if err != nil {
		t.Fatal(err)
	}
	var file struct {
		Groups []struct {
			Rules []struct {
				Alert string `json:"alert"`
				Expr  string `json:"expr"`
			} `json:"rules"`
		} `json:"groups"`
	}
	if err := utilyaml.Unmarshal(data, &file); err != nil {
		t.Fatal(err)
	}
	want := map[string]bool{}
	for _, g := range file.Groups {
		for _, r := range g.Rules {
			want[r.Alert] = true
			if _, err := prom.query(t.Context(), r.Expr, at); err != nil {
				t.Errorf("alert %s: %v", r.Alert, err)
			}
		}
	}
	groups, err := prom.rules(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	loaded := 0
	for _, g := range groups {
		for _, r := range g.Rules {
			if !want[r.Name] {
				continue
			}
			loaded++
			if r.Health != "ok" || r.LastError != "" || r.LastEvaluation.IsZero() {
				t.Errorf("alert %s: health %q, last error %q, last evaluated %s", r.Name, r.Health, r.LastError, r.LastEvaluation)
			}
		}
	}
	if loaded != len(want) {
		t.Errorf("Prometheus loaded %d of the %d alert rules", loaded, len(want))
	}
}

// checkFigures checks what the dashboards should show after the scale event:
// three Ready members, nothing unowned, the handovers and the rebalance that
// moved slots to the new member with their durations, objects cached on
// every member, and every object labelled with its slot.
func checkFigures(t *testing.T, prom *promServer, at time.Time) {
	t.Helper()
	sel := fmt.Sprintf(`namespace=%q, ring=%q`, operatorNS, ringName)
	for _, c := range []struct {
		expr string
		ok   func(float64) bool
		want string
	}{
		{`max without (pod, instance) (kubeshard_ring_members{` + sel + `, state="Ready"})`, func(v float64) bool { return v == 3 }, "3"},
		{`max without (pod, instance) (kubeshard_ring_unowned_slots{` + sel + `})`, func(v float64) bool { return v == 0 }, "0"},
		{`sum(kubeshard_ring_handovers_total{` + sel + `, result="completed"})`, func(v float64) bool { return v >= 1024/3 }, "at least a third of the slots"},
		{`sum(kubeshard_ring_rebalance_duration_seconds_count{` + sel + `})`, func(v float64) bool { return v >= 1 }, "at least 1"},
		{`sum(kubeshard_ring_handover_duration_seconds_count{` + sel + `})`, func(v float64) bool { return v >= 1024/3 }, "at least a third of the slots"},
		{`count(sum by (member) (kubeshard_member_cached_objects{` + sel + `}) > 0)`, func(v float64) bool { return v == 3 }, "3 members"},
		// Every object was labelled once, by member 0's webhook or by the
		// labeler when the webhook could not.
		{`sum(kubeshard_webhook_assignments_total{` + sel + `, result="labelled"}) + sum(kubeshard_labeler_labels_total{` + sel + `})`,
			func(v float64) bool { return v >= objects }, fmt.Sprintf("at least %d (the objects created)", objects)},
	} {
		res, err := prom.query(t.Context(), c.expr, at)
		if err != nil {
			t.Errorf("%s: %v", c.expr, err)
			continue
		}
		if len(res) != 1 || !c.ok(res[0].number()) {
			t.Errorf("%s = %v, want %s", c.expr, res, c.want)
		}
	}
}

// ringDurations returns what the coordinator's histograms say about the
// scale event: the rebalance's duration and the p99 of its handovers.
func ringDurations(t *testing.T, prom *promServer, at time.Time) (rebalance, handoverP99 string) {
	t.Helper()
	sel := fmt.Sprintf(`namespace=%q, ring=%q`, operatorNS, ringName)
	read := func(expr string) string {
		res, err := prom.query(t.Context(), expr, at)
		if err != nil || len(res) != 1 {
			t.Errorf("%s = %v (%v), want one value", expr, res, err)
			return "?"
		}
		return time.Duration(res[0].number() * float64(time.Second)).Round(time.Millisecond).String()
	}
	return read(`sum(kubeshard_ring_rebalance_duration_seconds_sum{` + sel + `})`),
		read(`histogram_quantile(0.99, sum by (le) (kubeshard_ring_handover_duration_seconds_bucket{` + sel + `}))`)
}

func percentile(sorted []time.Duration, q float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	return sorted[min(len(sorted)-1, int(q*float64(len(sorted))))].Round(time.Millisecond)
}
