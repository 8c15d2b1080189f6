package monitoring

import (
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	utilyaml "k8s.io/apimachinery/pkg/util/yaml"

	"github.com/kubeshard/kubeshard/internal/testenv"
)

// dashboard is the part of a Grafana dashboard's JSON model that the tests
// read.
type dashboard struct {
	file        string
	UID         string `json:"uid"`
	Title       string `json:"title"`
	Description string `json:"description"`
	Templating  struct {
		List []variable `json:"list"`
	} `json:"templating"`
	Panels []panel `json:"panels"`
}

type variable struct {
	Name       string          `json:"name"`
	Type       string          `json:"type"`
	Query      json.RawMessage `json:"query"`
	Datasource *datasourceRef  `json:"datasource"`
	Multi      bool            `json:"multi"`
	IncludeAll bool            `json:"includeAll"`
	AllValue   string          `json:"allValue"`
}

type panel struct {
	ID         int            `json:"id"`
	Type       string         `json:"type"`
	Title      string         `json:"title"`
	Datasource *datasourceRef `json:"datasource"`
	Targets    []target       `json:"targets"`
	// Panels are those of a collapsed row.
	Panels []panel `json:"panels"`
}

type target struct {
	RefID      string         `json:"refId"`
	Expr       string         `json:"expr"`
	Datasource *datasourceRef `json:"datasource"`
}

type datasourceRef struct {
	Type string `json:"type"`
	UID  string `json:"uid"`
}

// datasourceVar is the only data source every panel may use, so that a
// dashboard works with whatever Prometheus the user picks.
var datasourceVar = datasourceRef{Type: "prometheus", UID: "${datasource}"}

// builtins are Grafana's own variables that the dashboards may use.
var builtins = []string{"__rate_interval", "__interval", "__interval_ms", "__range", "__range_s", "__range_ms"}

var (
	// varRef matches $name and ${name} (with an optional :format).
	varRef = regexp.MustCompile(`\$(?:\{([A-Za-z0-9_]+)(?::[a-z]+)?\}|([A-Za-z0-9_]+))`)
	// labelValues matches a Prometheus variable query
	// label_values(<selector>, <label>) or label_values(<label>).
	labelValues = regexp.MustCompile(`^label_values\(\s*(?:(.+?)\s*,\s*)?([A-Za-z_][A-Za-z0-9_]*)\s*\)$`)
)

// dashboardDir is where the dashboards live, relative to the module root.
const dashboardDir = "deploy/monitoring/dashboards"

// loadDashboards reads every dashboard in deploy/monitoring/dashboards.
func loadDashboards(t *testing.T) []dashboard {
	t.Helper()
	root, err := testenv.ModuleRoot()
	if err != nil {
		t.Fatal(err)
	}
	files, err := filepath.Glob(filepath.Join(root, dashboardDir, "*.json"))
	if err != nil {
		t.Fatal(err)
	}
	if len(files) == 0 {
		t.Fatalf("no dashboards in %s", dashboardDir)
	}
	var out []dashboard
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		d := dashboard{file: filepath.Base(f)}
		if err := json.Unmarshal(data, &d); err != nil {
			t.Fatalf("%s: %v", d.file, err)
		}
		out = append(out, d)
	}
	return out
}

// query returns a query variable's query, which Grafana stores either as a
// string or as an object with a query field.
func (v variable) query() string {
	var s string
	if json.Unmarshal(v.Query, &s) == nil {
		return s
	}
	var o struct {
		Query string `json:"query"`
	}
	_ = json.Unmarshal(v.Query, &o)
	return o.Query
}

func (d dashboard) variable(name string) (variable, bool) {
	i := slices.IndexFunc(d.Templating.List, func(v variable) bool { return v.Name == name })
	if i < 0 {
		return variable{}, false
	}
	return d.Templating.List[i], true
}

// allPanels returns the dashboard's panels, those inside collapsed rows
// included.
func (d dashboard) allPanels() []panel {
	var out []panel
	var walk func([]panel)
	walk = func(ps []panel) {
		for _, p := range ps {
			out = append(out, p)
			walk(p.Panels)
		}
	}
	walk(d.Panels)
	return out
}

// referencedVars returns the names of the variables s uses.
func referencedVars(s string) []string {
	var out []string
	for _, m := range varRef.FindAllStringSubmatch(s, -1) {
		out = append(out, m[1]+m[2])
	}
	return out
}

// TestDashboardsAreWellFormed checks what Grafana needs to show a dashboard
// on any Prometheus: a datasource variable that every panel and query uses,
// ring and member variables from label_values queries, unique panel ids,
// and no reference to a variable that does not exist. It needs nothing but
// the JSON files.
func TestDashboardsAreWellFormed(t *testing.T) {
	dashboards := loadDashboards(t)
	uids := map[string]string{}
	for _, d := range dashboards {
		t.Run(d.file, func(t *testing.T) {
			if d.UID == "" || d.Title == "" || d.Description == "" {
				t.Errorf("uid %q, title %q, description %q: all three are needed", d.UID, d.Title, d.Description)
			}
			if other, ok := uids[d.UID]; ok {
				t.Errorf("uid %q is also the uid of %s", d.UID, other)
			}
			uids[d.UID] = d.file
			checkVariables(t, d)
			checkPanels(t, d)
		})
	}
	for _, want := range []string{"kubeshard-overview", "kubeshard-reconcile", "kubeshard-resources", "kubeshard-loadtest"} {
		if _, ok := uids[want]; !ok {
			t.Errorf("no dashboard with uid %s", want)
		}
	}
}

func checkVariables(t *testing.T, d dashboard) {
	ds, ok := d.variable("datasource")
	if !ok || ds.Type != "datasource" || ds.query() != "prometheus" {
		t.Errorf("want a variable datasource of type datasource for prometheus, got %+v", ds)
	}
	defined := slices.Clone(builtins)
	for _, v := range d.Templating.List {
		if slices.Contains(defined, v.Name) {
			t.Errorf("variable %s is defined twice", v.Name)
		}
		if v.Type == "query" {
			if v.Datasource == nil || *v.Datasource != datasourceVar {
				t.Errorf("variable %s queries data source %+v, want %+v", v.Name, v.Datasource, datasourceVar)
			}
			if !labelValues.MatchString(v.query()) {
				t.Errorf("variable %s: query %q is not label_values(...)", v.Name, v.query())
			}
			// Grafana resolves variables in order: a query may use only
			// those defined before it.
			for _, ref := range referencedVars(v.query()) {
				if !slices.Contains(defined, ref) {
					t.Errorf("variable %s uses $%s, which is not defined before it", v.Name, ref)
				}
			}
		}
		defined = append(defined, v.Name)
	}
	for _, name := range []string{"ring", "member"} {
		if v, ok := d.variable(name); !ok || v.Type != "query" {
			t.Errorf("no query variable %s", name)
		}
	}
}

func checkPanels(t *testing.T, d dashboard) {
	ids := map[int]string{}
	targets := 0
	for _, p := range d.allPanels() {
		if other, ok := ids[p.ID]; ok || p.ID <= 0 {
			t.Errorf("panel %q has id %d, which is not positive or is also the id of %q", p.Title, p.ID, other)
		}
		ids[p.ID] = p.Title
		if p.Type == "row" {
			continue
		}
		if p.Title == "" {
			t.Errorf("panel %d has no title", p.ID)
		}
		if p.Datasource == nil || *p.Datasource != datasourceVar {
			t.Errorf("panel %q uses data source %+v, want %+v", p.Title, p.Datasource, datasourceVar)
		}
		if len(p.Targets) == 0 {
			t.Errorf("panel %q has no query", p.Title)
		}
		refIDs := map[string]bool{}
		for _, tg := range p.Targets {
			targets++
			if tg.Datasource != nil && *tg.Datasource != datasourceVar {
				t.Errorf("panel %q query %s uses data source %+v, want %+v", p.Title, tg.RefID, tg.Datasource, datasourceVar)
			}
			if tg.RefID == "" || refIDs[tg.RefID] {
				t.Errorf("panel %q: query refId %q is empty or repeated", p.Title, tg.RefID)
			}
			refIDs[tg.RefID] = true
			if strings.TrimSpace(tg.Expr) == "" {
				t.Errorf("panel %q query %s has no expression", p.Title, tg.RefID)
			}
			for _, ref := range referencedVars(tg.Expr) {
				if _, ok := d.variable(ref); !ok && !slices.Contains(builtins, ref) {
					t.Errorf("panel %q query %s uses $%s, which is not a variable of the dashboard", p.Title, tg.RefID, ref)
				}
			}
		}
	}
	if targets == 0 {
		t.Error("the dashboard has no queries")
	}
}

// TestLoadTestDashboardNamesTheHarnessMetrics checks that the load-test
// dashboard documents the metrics it expects from the load-test harness,
// the contract between the two.
func TestLoadTestDashboardNamesTheHarnessMetrics(t *testing.T) {
	for _, d := range loadDashboards(t) {
		if d.UID != "kubeshard-loadtest" {
			continue
		}
		for _, m := range loadtestMetrics {
			if !strings.Contains(d.Description, m) {
				t.Errorf("the description does not name %s", m)
			}
			used := false
			for _, p := range d.allPanels() {
				for _, tg := range p.Targets {
					used = used || strings.Contains(tg.Expr, m)
				}
			}
			if !used {
				t.Errorf("no panel queries %s", m)
			}
		}
		return
	}
	t.Fatal("no load-test dashboard")
}

// TestEveryDashboardIsPackaged checks that the monitoring component's
// ConfigMap for Grafana's sidecar carries every dashboard file.
func TestEveryDashboardIsPackaged(t *testing.T) {
	root, err := testenv.ModuleRoot()
	if err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(filepath.Join(root, "deploy", "monitoring", "kustomization.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var k struct {
		ConfigMapGenerator []struct {
			Name    string   `json:"name"`
			Files   []string `json:"files"`
			Options struct {
				Labels map[string]string `json:"labels"`
			} `json:"options"`
		} `json:"configMapGenerator"`
	}
	if err := utilyaml.Unmarshal(data, &k); err != nil {
		t.Fatal(err)
	}
	var packaged []string
	for _, g := range k.ConfigMapGenerator {
		if g.Options.Labels["grafana_dashboard"] != "1" {
			continue
		}
		for _, f := range g.Files {
			packaged = append(packaged, filepath.Base(f))
		}
	}
	for _, d := range loadDashboards(t) {
		if !slices.Contains(packaged, d.file) {
			t.Errorf("%s is in no ConfigMap labelled grafana_dashboard: \"1\" (packaged: %v)", d.file, packaged)
		}
	}
	if len(packaged) == 0 {
		t.Error("no configMapGenerator in deploy/monitoring/kustomization.yaml has the label grafana_dashboard: \"1\"")
	}
}
