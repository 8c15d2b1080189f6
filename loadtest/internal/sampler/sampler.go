// Package sampler records, at a fixed interval while a load test runs, the
// ShardRing (members, slots, moves), the objects each member owns (slot
// labels counted by the tracker), each member's CPU and memory (from its
// metrics endpoint) and the API server's request rates (from its /metrics).
package sampler

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	shardingv1alpha1 "github.com/kubeshard/kubeshard/api/sharding/v1alpha1"
	"github.com/kubeshard/kubeshard/loadtest/internal/tracker"
	"github.com/kubeshard/kubeshard/pkg/assignment"
)

// Options configure a Sampler.
type Options struct {
	// Client reads the ShardRing. Required.
	Client client.Client
	// Ring is the ShardRing's namespace and name. Required.
	Ring types.NamespacedName
	// Tracker counts the objects per slot. Required.
	Tracker *tracker.Tracker
	// MemberMetrics fetches a member's Prometheus metrics. Default: members'
	// CPU and memory are not recorded.
	MemberMetrics func(ctx context.Context, member string) ([]byte, error)
	// APIServerMetrics fetches the API server's Prometheus metrics. Default:
	// request rates are not recorded.
	APIServerMetrics func(ctx context.Context) ([]byte, error)
	// Interval between samples. Default 5s.
	Interval time.Duration
}

// Member is one member in one sample.
type Member struct {
	Name  string `json:"name"`
	State string `json:"state"`
	Slots int32  `json:"slots"`
	// Objects is the number of objects in the member's slots.
	Objects int `json:"objects"`
	// CPU is the member's CPU use since the previous sample, in cores.
	CPU float64 `json:"cpuCores"`
	// RSS and Heap are its resident memory and Go heap in use, in bytes.
	RSS  float64 `json:"rssBytes"`
	Heap float64 `json:"heapInuseBytes"`
}

// Snapshot is one sample.
type Snapshot struct {
	// At is the time of the sample in seconds since the tracker started.
	At           float64  `json:"at"`
	Epoch        int64    `json:"epoch"`
	MemberCount  int32    `json:"memberCount"`
	ReadyMembers int32    `json:"readyMembers"`
	MovingSlots  int32    `json:"movingSlots"`
	Members      []Member `json:"members"`
	Objects      int      `json:"objects"`
	Reconciled   int      `json:"reconciled"`
	// APIRequests are the API server's requests per second since the
	// previous sample, by verb; LargeDataRequests those for LargeData.
	APIRequests       map[string]float64 `json:"apiRequestsPerSecond,omitempty"`
	LargeDataRequests map[string]float64 `json:"largeDataRequestsPerSecond,omitempty"`
	// APIServerCPU is the API server's CPU use since the previous sample,
	// in cores.
	APIServerCPU float64 `json:"apiServerCpuCores,omitempty"`
	// APIServerRSS and APIServerHeap are the API server's resident memory
	// and Go heap in use, in bytes; most of it is its watch cache, which
	// grows with the objects. StorageBytes is the size of its etcd database
	// (apiserver_storage_size_bytes).
	APIServerRSS  float64 `json:"apiServerRssBytes,omitempty"`
	APIServerHeap float64 `json:"apiServerHeapInuseBytes,omitempty"`
	StorageBytes  float64 `json:"storageBytes,omitempty"`
	// LoadAverage is the machine's one-minute load average, where the
	// harness runs (Linux only): the members share the cores with whatever
	// else runs.
	LoadAverage float64 `json:"loadAverage,omitempty"`
}

// Sampler takes the samples; create it with New and start it with Run.
type Sampler struct {
	opts Options

	mu        sync.Mutex
	snapshots []Snapshot

	lastAt  time.Time
	lastCPU map[string]float64
	lastAPI map[string]float64
	lastLD  map[string]float64
	// lastAPICPU is the API server's CPU seconds at the last sample.
	lastAPICPU float64
}

// New returns a Sampler.
func New(opts Options) (*Sampler, error) {
	if opts.Client == nil || opts.Tracker == nil || opts.Ring.Name == "" {
		return nil, fmt.Errorf("sampler: Client, Tracker and Ring are required")
	}
	if opts.Interval == 0 {
		opts.Interval = 5 * time.Second
	}
	return &Sampler{opts: opts, lastCPU: map[string]float64{}}, nil
}

// Run samples every Interval until ctx ends, and once more at the end.
func (s *Sampler) Run(ctx context.Context) {
	tick := time.NewTicker(s.opts.Interval)
	defer tick.Stop()
	for {
		s.Sample(ctx)
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// Snapshots returns the samples taken so far.
func (s *Sampler) Snapshots() []Snapshot {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Snapshot(nil), s.snapshots...)
}

// Ring reads the ShardRing.
func (s *Sampler) Ring(ctx context.Context) (*shardingv1alpha1.ShardRing, error) {
	sr := &shardingv1alpha1.ShardRing{}
	if err := s.opts.Client.Get(ctx, s.opts.Ring, sr); err != nil {
		return nil, fmt.Errorf("reading the ShardRing: %w", err)
	}
	return sr, nil
}

// Sample takes one sample now. Errors leave fields empty: a sample is
// better partial than missing.
func (s *Sampler) Sample(ctx context.Context) {
	now := time.Now()
	stats := s.opts.Tracker.Stats()
	snap := Snapshot{At: now.Sub(s.opts.Tracker.Start()).Seconds(), Objects: stats.Present, Reconciled: stats.Reconciled, LoadAverage: loadAverage()}
	var elapsed float64
	if !s.lastAt.IsZero() {
		elapsed = now.Sub(s.lastAt).Seconds()
	}
	s.lastAt = now
	if sr, err := s.Ring(ctx); err == nil {
		snap.Epoch, snap.MemberCount, snap.ReadyMembers, snap.MovingSlots = sr.Status.Epoch, sr.Status.MemberCount, sr.Status.ReadyMembers, sr.Status.MovingSlots
		perMember := map[string]int{}
		if table, err := assignment.FromStatus(&sr.Status, int(sr.Spec.Slots)); err == nil {
			for slot, n := range s.opts.Tracker.SlotObjects() {
				if slot < len(table.Owner) {
					perMember[table.Owner[slot]] += n
				}
			}
		}
		for _, m := range sr.Status.Members {
			member := Member{Name: m.Name, State: string(m.State), Slots: m.SlotCount, Objects: perMember[m.Name]}
			s.memberMetrics(ctx, &member, elapsed)
			snap.Members = append(snap.Members, member)
		}
	}
	if s.opts.APIServerMetrics != nil {
		if body, err := s.opts.APIServerMetrics(ctx); err == nil {
			s.apiServerMetrics(&snap, body, elapsed)
		}
	}
	if ctx.Err() != nil {
		// Cut short: the ring and the metrics may be missing.
		return
	}
	s.mu.Lock()
	s.snapshots = append(s.snapshots, snap)
	s.mu.Unlock()
}

func (s *Sampler) apiServerMetrics(snap *Snapshot, body []byte, elapsed float64) {
	fams, err := parse(body)
	if err != nil {
		return
	}
	byVerb, largeData := apiRequests(fams)
	cpu := sum(fams["process_cpu_seconds_total"])
	if s.lastAPI != nil && elapsed > 0 {
		snap.APIRequests, snap.LargeDataRequests = rates(byVerb, s.lastAPI, elapsed), rates(largeData, s.lastLD, elapsed)
		snap.APIServerCPU = max(0, cpu-s.lastAPICPU) / elapsed
	}
	s.lastAPI, s.lastLD, s.lastAPICPU = byVerb, largeData, cpu
	snap.APIServerRSS = sum(fams["process_resident_memory_bytes"])
	snap.APIServerHeap = sum(fams["go_memstats_heap_inuse_bytes"])
	snap.StorageBytes = sum(fams["apiserver_storage_size_bytes"])
}

func (s *Sampler) memberMetrics(ctx context.Context, m *Member, elapsed float64) {
	if s.opts.MemberMetrics == nil {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	body, err := s.opts.MemberMetrics(ctx, m.Name)
	if err != nil {
		return
	}
	fams, err := parse(body)
	if err != nil {
		return
	}
	cpu := sum(fams["process_cpu_seconds_total"])
	if last, ok := s.lastCPU[m.Name]; ok && elapsed > 0 && cpu >= last {
		m.CPU = (cpu - last) / elapsed
	}
	s.lastCPU[m.Name] = cpu
	m.RSS = sum(fams["process_resident_memory_bytes"])
	m.Heap = sum(fams["go_memstats_heap_inuse_bytes"])
}

func parse(body []byte) (map[string]*dto.MetricFamily, error) {
	p := expfmt.NewTextParser(model.UTF8Validation)
	return p.TextToMetricFamilies(bytes.NewReader(body))
}

// apiRequests sums apiserver_request_total by verb, for every resource and
// for LargeData.
func apiRequests(fams map[string]*dto.MetricFamily) (byVerb, largeData map[string]float64) {
	byVerb, largeData = map[string]float64{}, map[string]float64{}
	fam := fams["apiserver_request_total"]
	if fam == nil {
		return byVerb, largeData
	}
	for _, m := range fam.Metric {
		var verb, resource string
		for _, l := range m.Label {
			switch l.GetName() {
			case "verb":
				verb = l.GetValue()
			case "resource":
				resource = l.GetValue()
			}
		}
		v := value(m)
		byVerb[verb] += v
		if resource == "largedata" {
			largeData[verb] += v
		}
	}
	return byVerb, largeData
}

func rates(now, last map[string]float64, elapsed float64) map[string]float64 {
	out := map[string]float64{}
	for k, v := range now {
		if d := v - last[k]; d >= 0 {
			out[k] = d / elapsed
		}
	}
	return out
}

func sum(fam *dto.MetricFamily) float64 {
	if fam == nil {
		return 0
	}
	var total float64
	for _, m := range fam.Metric {
		total += value(m)
	}
	return total
}

// value is a counter's, gauge's or untyped sample's value (an exposition
// without TYPE lines has only untyped ones).
func value(m *dto.Metric) float64 {
	switch {
	case m.Counter != nil:
		return m.Counter.GetValue()
	case m.Gauge != nil:
		return m.Gauge.GetValue()
	case m.Untyped != nil:
		return m.Untyped.GetValue()
	}
	return 0
}

// loadAverage reads the one-minute load average; 0 where /proc/loadavg
// does not exist.
func loadAverage() float64 {
	data, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return 0
	}
	field, _, _ := strings.Cut(string(data), " ")
	v, _ := strconv.ParseFloat(field, 64)
	return v
}
