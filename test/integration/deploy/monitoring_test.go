package deploy

import (
	"encoding/json"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/kubeshard/kubeshard/pkg/coordinator"
	"github.com/kubeshard/kubeshard/pkg/serving"
)

// targetLabels are the labels the Prometheus Operator gives every series it
// scrapes through a ServiceMonitor.
var targetLabels = []string{"namespace", "pod", "job", "instance", "service", "endpoint", "container"}

// controllerRuntimeMetrics are the controller-runtime metrics the alerts use.
// controller-runtime registers them from an internal package, so they are
// listed here: name and labels.
var controllerRuntimeMetrics = map[string][]string{
	"controller_runtime_reconcile_errors_total": {"controller"},
}

var (
	metricRef = regexp.MustCompile(`\b((?:kubeshard|controller_runtime)_[a-z0-9_]+)(\{[^}]*\})?`)
	matcher   = regexp.MustCompile(`([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)`)
	grouping  = regexp.MustCompile(`\b(?:by|without)\s*\(([^)]*)\)`)
	descText  = regexp.MustCompile(`fqName: "([^"]*)".*variableLabels: \{([^}]*)\}`)
)

// checkMonitoring checks that the ServiceMonitor scrapes the members' metrics
// port once each, and that every alert is well-formed and queries metrics the
// operator exports, with labels they have: an alert on a misspelt metric is
// silent forever.
func checkMonitoring(t *testing.T, m manifest) {
	sts, c := operator(t, m)
	monitors := m.all("ServiceMonitor")
	if len(monitors) != 1 {
		t.Fatalf("%d ServiceMonitors, want 1", len(monitors))
	}
	selector, _, _ := unstructured.NestedStringMap(monitors[0].Object, "spec", "selector", "matchLabels")
	endpoints, _, _ := unstructured.NestedSlice(monitors[0].Object, "spec", "endpoints")
	var scraped []string
	for _, u := range m.all("Service") {
		if selects(selector, u.GetLabels()) {
			scraped = append(scraped, u.GetName())
		}
	}
	// Each member is scraped once: a second Service would double every series.
	if len(scraped) != 1 || scraped[0] != sts.Spec.ServiceName {
		t.Errorf("the ServiceMonitor selects Services %v, want only %s", scraped, sts.Spec.ServiceName)
	} else {
		svc := get[corev1.Service](t, m, "Service", scraped[0])
		if len(endpoints) != 1 {
			t.Fatalf("%d ServiceMonitor endpoints, want 1", len(endpoints))
		}
		port, _, _ := unstructured.NestedString(endpoints[0].(map[string]any), "port")
		want := containerPort(c, intstr.FromString("metrics"))
		i := slices.IndexFunc(svc.Spec.Ports, func(p corev1.ServicePort) bool { return p.Name == port })
		if want == 0 || i < 0 || containerPort(c, svc.Spec.Ports[i].TargetPort) != want {
			t.Errorf("the ServiceMonitor scrapes port %q of Service %s, which does not lead to the container's port named metrics", port, svc.Name)
		}
	}

	exported := exportedMetrics(t)
	rules := m.all("PrometheusRule")
	if len(rules) != 1 {
		t.Fatalf("%d PrometheusRules, want 1", len(rules))
	}
	groups, _, _ := unstructured.NestedSlice(rules[0].Object, "spec", "groups")
	alerts := 0
	for _, g := range groups {
		rs, _, _ := unstructured.NestedSlice(g.(map[string]any), "rules")
		for _, r := range rs {
			alerts++
			checkAlert(t, r.(map[string]any), exported)
		}
	}
	if alerts == 0 {
		t.Error("the PrometheusRule has no alerts")
	}
	checkDashboards(t, m)
}

// checkDashboards checks that the build carries the Grafana dashboards in a
// ConfigMap that Grafana's sidecar picks up (label grafana_dashboard: "1"),
// each a JSON document. test/integration/monitoring checks their content.
func checkDashboards(t *testing.T, m manifest) {
	var dashboards []string
	for _, u := range m.all("ConfigMap") {
		if u.GetLabels()["grafana_dashboard"] != "1" {
			continue
		}
		data, _, _ := unstructured.NestedStringMap(u.Object, "data")
		for key, doc := range data {
			if !strings.HasSuffix(key, ".json") || !json.Valid([]byte(doc)) {
				t.Errorf("ConfigMap %s: %s is not a JSON dashboard", u.GetName(), key)
			}
			dashboards = append(dashboards, key)
		}
	}
	slices.Sort(dashboards)
	want := []string{"kubeshard-loadtest.json", "kubeshard-overview.json", "kubeshard-reconcile.json", "kubeshard-resources.json"}
	if !slices.Equal(dashboards, want) {
		t.Errorf("dashboards in ConfigMaps labelled grafana_dashboard: %v, want %v", dashboards, want)
	}
}

func checkAlert(t *testing.T, rule map[string]any, exported map[string][]string) {
	name, _, _ := unstructured.NestedString(rule, "alert")
	expr, _, _ := unstructured.NestedString(rule, "expr")
	severity, _, _ := unstructured.NestedString(rule, "labels", "severity")
	summary, _, _ := unstructured.NestedString(rule, "annotations", "summary")
	if name == "" || expr == "" || summary == "" || !slices.Contains([]string{"critical", "warning", "info"}, severity) {
		t.Errorf("alert %q: needs alert, expr, a severity label (critical, warning, info) and a summary; got %v", name, rule)
		return
	}

	refs := metricRef.FindAllStringSubmatch(expr, -1)
	if len(refs) == 0 {
		t.Errorf("alert %s queries none of kubeshard's or controller-runtime's metrics: %s", name, expr)
	}
	known := slices.Clone(targetLabels)
	for _, ref := range refs {
		metric, matchers := ref[1], ref[2]
		labels, ok := exported[metric]
		if !ok {
			t.Errorf("alert %s: no metric %s is exported", name, metric)
			continue
		}
		known = append(known, labels...)
		for _, mm := range matcher.FindAllStringSubmatch(matchers, -1) {
			if !slices.Contains(labels, mm[1]) && !slices.Contains(targetLabels, mm[1]) {
				t.Errorf("alert %s: metric %s has no label %s (it has %v)", name, metric, mm[1], labels)
			}
		}
	}
	for _, g := range grouping.FindAllStringSubmatch(expr, -1) {
		for l := range strings.SplitSeq(g[1], ",") {
			if l = strings.TrimSpace(l); l != "" && !slices.Contains(known, l) {
				t.Errorf("alert %s: groups by %s, which none of its metrics has", name, l)
			}
		}
	}
}

// exportedMetrics returns the names and labels of the metrics kubeshard
// registers, from the constructors the operator calls.
func exportedMetrics(t *testing.T) map[string][]string {
	rec := &descRecorder{t: t, metrics: map[string][]string{}}
	if _, err := coordinator.NewMetrics(rec); err != nil {
		t.Fatal(err)
	}
	if _, err := serving.NewMetrics(rec, "member"); err != nil {
		t.Fatal(err)
	}
	for name, labels := range controllerRuntimeMetrics {
		rec.metrics[name] = labels
	}
	return rec.metrics
}

// descRecorder is a prometheus.Registerer that records the name and label
// names of what is registered on it. Desc has no accessors; its String is
// the only way to them.
type descRecorder struct {
	t       *testing.T
	metrics map[string][]string
}

func (r *descRecorder) Register(c prometheus.Collector) error {
	ch := make(chan *prometheus.Desc)
	go func() {
		c.Describe(ch)
		close(ch)
	}()
	for d := range ch {
		match := descText.FindStringSubmatch(d.String())
		if match == nil {
			r.t.Errorf("cannot read the name of %s", d)
			continue
		}
		var labels []string
		for l := range strings.SplitSeq(match[2], ",") {
			if l != "" {
				labels = append(labels, strings.TrimSuffix(strings.TrimPrefix(l, "c("), ")"))
			}
		}
		r.metrics[match[1]] = labels
	}
	return nil
}

func (r *descRecorder) MustRegister(cs ...prometheus.Collector) {
	for _, c := range cs {
		_ = r.Register(c)
	}
}

func (r *descRecorder) Unregister(prometheus.Collector) bool { return false }
