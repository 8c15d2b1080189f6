// Package apiprofile measures where kube-apiserver's CPU and memory go during
// a load test, from the API server's own profiling endpoints: a CPU profile
// whose samples are split into the phases of a created object's way through
// the server (admission webhook, create, status patch, watch, ...), per
// created object, and the live heap after a forced garbage collection, per
// stored object.
package apiprofile

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	"github.com/google/pprof/profile"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// Get fetches a path of the API server, such as /metrics.
type Get func(ctx context.Context, path string) ([]byte, error)

// Phase is the CPU the API server spent in one phase.
type Phase struct {
	Name string `json:"name"`
	// CPUSeconds is the CPU time of the phase's samples.
	CPUSeconds float64 `json:"cpuSeconds"`
	// MsPerCreate is CPUSeconds per LargeData created during the profile, in
	// milliseconds.
	MsPerCreate float64 `json:"msPerCreate"`
}

// CPU is a CPU profile of the API server split into phases.
type CPU struct {
	// Seconds is the profile's length; CPUSeconds the CPU time it sampled.
	Seconds    float64 `json:"seconds"`
	CPUSeconds float64 `json:"cpuSeconds"`
	// Creates and Patches are the LargeData POST and PATCH requests the API
	// server served meanwhile (from apiserver_request_total).
	Creates int64 `json:"creates"`
	Patches int64 `json:"patches"`
	// MsPerCreate is CPUSeconds per create, in milliseconds.
	MsPerCreate float64 `json:"msPerCreate"`
	Phases      []Phase `json:"phases"`
	// File is the raw profile's name in the report's folder (go tool pprof
	// reads it).
	File string `json:"file"`
}

// Heap is the API server's live heap after a forced garbage collection.
type Heap struct {
	LiveBytes float64 `json:"liveBytes"`
	// Objects is the number of LargeData stored when it was taken.
	Objects int `json:"objects"`
	// BytesPerObject is LiveBytes / Objects: everything the server keeps
	// alive, divided among the objects, most of which (with the watch cache)
	// is the objects themselves.
	BytesPerObject float64 `json:"bytesPerObject"`
	File           string  `json:"file"`
}

// phases in the order a sample is matched: a sample belongs to the first
// phase one of whose patterns matches a function of its stack. The request
// phases come first because their stacks also contain the serving machinery.
var phases = []struct {
	name string
	re   *regexp.Regexp
}{
	{"admission webhook call", regexp.MustCompile(`webhook/mutating|mutating\.\(\*mutatingDispatcher\)`)},
	{"create", regexp.MustCompile(`createHandler|CreateResource|namedCreaterAdapter|registry\.\(\*Store\)\.Create$`)},
	{"status patch", regexp.MustCompile(`customresource\.\(\*StatusREST\)\.Update`)},
	{"other patch (finalizer, spec)", regexp.MustCompile(`handlers\.PatchResource|handlers\.\(\*patcher\)`)},
	{"update, delete, get, list", regexp.MustCompile(`handlers\.(UpdateResource|DeleteResource|DeleteCollection|GetResource|ListResource)`)},
	{"watch: events from storage (once into the cache; without it, once per watcher)", regexp.MustCompile(`cacher\.\(\*Cacher\)\.(dispatchEvents|processEvent|startDispatching|dispatchEvent)|cacher\.\(\*watchCache\)|etcd3\.\(\*watchChan\)|cache\.\(\*Reflector\)`)},
	{"watch: encoding and sending to watchers", regexp.MustCompile(`handlers\.serveWatch|handlers\.handleWatch|WatchServer|watchEncoder|cacher\.\(\*cacheWatcher\)`)},
	{"watch cache consistency checker", regexp.MustCompile(`storage/cacher/consistency\.`)},
	{"Go garbage collector (background)", regexp.MustCompile(`^runtime\.gcBgMarkWorker`)},
	{"request serving (filters, authn/authz, HTTP/2, TLS)", regexp.MustCompile(`^net/http\.|x/net/http2|filterlatency|DefaultBuildHandlerChain|handlers/finisher\.|crypto/tls`)},
	{"other", regexp.MustCompile(`.`)},
}

// Classify splits a CPU profile into the phases, in their order.
func Classify(p *profile.Profile) ([]Phase, float64, error) {
	idx := -1
	for i, st := range p.SampleType {
		if st.Type == "cpu" {
			idx = i
		}
	}
	if idx < 0 {
		return nil, 0, fmt.Errorf("not a CPU profile: sample types %v", p.SampleType)
	}
	out := make([]Phase, len(phases))
	for i, ph := range phases {
		out[i].Name = ph.name
	}
	var total float64
	for _, s := range p.Sample {
		v := float64(s.Value[idx]) / 1e9
		total += v
		var funcs []string
		for _, loc := range s.Location {
			for _, l := range loc.Line {
				if l.Function != nil {
					funcs = append(funcs, l.Function.Name)
				}
			}
		}
		for i, ph := range phases {
			if matchesAny(ph.re, funcs) {
				out[i].CPUSeconds += v
				break
			}
		}
	}
	return out, total, nil
}

func matchesAny(re *regexp.Regexp, funcs []string) bool {
	for _, f := range funcs {
		if re.MatchString(f) {
			return true
		}
	}
	return false
}

// TakeCPU profiles the API server for d, writes the profile into dir as
// <name>.pprof and splits it into phases per LargeData created meanwhile.
func TakeCPU(ctx context.Context, get Get, d time.Duration, dir, name string) (*CPU, error) {
	before, err := largeDataRequests(ctx, get)
	if err != nil {
		return nil, err
	}
	raw, err := get(ctx, fmt.Sprintf("/debug/pprof/profile?seconds=%d", int(d.Seconds())))
	if err != nil {
		return nil, fmt.Errorf("profiling the API server: %w", err)
	}
	after, err := largeDataRequests(ctx, get)
	if err != nil {
		return nil, err
	}
	file, err := write(dir, name, raw)
	if err != nil {
		return nil, err
	}
	p, err := profile.Parse(bytes.NewReader(raw))
	if err != nil {
		return nil, fmt.Errorf("reading the API server's CPU profile: %w", err)
	}
	ph, total, err := Classify(p)
	if err != nil {
		return nil, err
	}
	c := &CPU{
		Seconds: float64(p.DurationNanos) / 1e9, CPUSeconds: total, File: file,
		Creates: after["POST"] - before["POST"], Patches: after["PATCH"] - before["PATCH"], Phases: ph,
	}
	if c.Creates > 0 {
		c.MsPerCreate = 1000 * total / float64(c.Creates)
		for i := range c.Phases {
			c.Phases[i].MsPerCreate = 1000 * c.Phases[i].CPUSeconds / float64(c.Creates)
		}
	}
	return c, nil
}

// TakeHeap forces a garbage collection in the API server, writes its heap
// profile into dir as <name>.pprof and returns the live bytes per object.
func TakeHeap(ctx context.Context, get Get, objects int, dir, name string) (*Heap, error) {
	raw, err := get(ctx, "/debug/pprof/heap?gc=1")
	if err != nil {
		return nil, fmt.Errorf("reading the API server's heap profile: %w", err)
	}
	file, err := write(dir, name, raw)
	if err != nil {
		return nil, err
	}
	p, err := profile.Parse(bytes.NewReader(raw))
	if err != nil {
		return nil, fmt.Errorf("reading the API server's heap profile: %w", err)
	}
	live, err := LiveBytes(p)
	if err != nil {
		return nil, err
	}
	h := &Heap{LiveBytes: live, Objects: objects, File: file}
	if objects > 0 {
		h.BytesPerObject = live / float64(objects)
	}
	return h, nil
}

// LiveBytes sums a heap profile's inuse_space.
func LiveBytes(p *profile.Profile) (float64, error) {
	for i, st := range p.SampleType {
		if st.Type != "inuse_space" {
			continue
		}
		var sum float64
		for _, s := range p.Sample {
			sum += float64(s.Value[i])
		}
		return sum, nil
	}
	return 0, fmt.Errorf("not a heap profile: sample types %v", p.SampleType)
}

// largeDataRequests returns the LargeData requests the API server has served
// so far, by verb.
func largeDataRequests(ctx context.Context, get Get) (map[string]int64, error) {
	body, err := get(ctx, "/metrics")
	if err != nil {
		return nil, fmt.Errorf("reading the API server's metrics: %w", err)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(bytes.NewReader(body))
	if err != nil {
		return nil, fmt.Errorf("parsing the API server's metrics: %w", err)
	}
	return RequestsByVerb(fams["apiserver_request_total"], "largedata"), nil
}

// RequestsByVerb sums apiserver_request_total of a resource by verb.
func RequestsByVerb(fam *dto.MetricFamily, resource string) map[string]int64 {
	out := map[string]int64{}
	if fam == nil {
		return out
	}
	for _, m := range fam.GetMetric() {
		var verb string
		match := false
		for _, l := range m.GetLabel() {
			switch l.GetName() {
			case "resource":
				match = l.GetValue() == resource
			case "verb":
				verb = l.GetValue()
			}
		}
		if match {
			out[strings.ToUpper(verb)] += int64(m.GetCounter().GetValue())
		}
	}
	return out
}

// write writes a profile into dir and returns its name there.
func write(dir, name string, raw []byte) (string, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	file := name + ".pprof"
	if err := os.WriteFile(filepath.Join(dir, file), raw, 0o644); err != nil {
		return "", fmt.Errorf("writing %s: %w", file, err)
	}
	return file, nil
}
