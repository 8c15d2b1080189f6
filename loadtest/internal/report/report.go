// Package report turns a load test's measurements into its reports: a JSON
// file with every figure, a Markdown summary and PNG charts (latency
// percentiles over time, objects, memory and CPU per member over time).
package report

import (
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/kubeshard/kubeshard/loadtest/internal/apiprofile"
	"github.com/kubeshard/kubeshard/loadtest/internal/sampler"
	"github.com/kubeshard/kubeshard/loadtest/internal/tracker"
	"github.com/kubeshard/kubeshard/loadtest/internal/workload"
)

// Files are the names of the reports in the output folder.
const (
	FileJSON     = "report.json"
	FileMarkdown = "summary.md"
	FileLatency  = "latency.png"
	FileObjects  = "objects-per-member.png"
	FileMemory   = "memory-per-member.png"
	FileCPU      = "cpu-per-member.png"
)

// Scenario is what was asked for.
type Scenario struct {
	Kubeconfig   string  `json:"kubeconfig,omitempty"`
	LocalCluster bool    `json:"localCluster"`
	Objects      int     `json:"objects"`
	Namespaces   int     `json:"namespaces"`
	Members      int     `json:"members"`
	Concurrency  int     `json:"concurrency"`
	Rate         float64 `json:"ratePerSecond"`
	QPS          float64 `json:"clientQPS"`
	Burst        int     `json:"clientBurst"`
	Items        int64   `json:"items"`
	BatchSize    int32   `json:"batchSize"`
	ChurnShare   float64 `json:"churnShare,omitempty"`
	ChurnSeconds float64 `json:"churnSeconds,omitempty"`
	Scale        string  `json:"scale,omitempty"`
	OperatorArgs string  `json:"operatorArgs,omitempty"`
	// Storage is the local cluster's storage: etcd or kine (over PostgreSQL).
	Storage string `json:"storage,omitempty"`
	// APIServerArgs were appended to the local cluster's kube-apiserver flags.
	APIServerArgs string `json:"apiServerArgs,omitempty"`
	// APIServerEnv was added to the local cluster's kube-apiserver environment.
	APIServerEnv string `json:"apiServerEnv,omitempty"`
	// Store is the operator's store on the local cluster: memory or
	// postgres; empty for a given cluster.
	Store string `json:"store,omitempty"`
	// Faults is the fault schedule (--faults).
	Faults string `json:"faults,omitempty"`
	// PeerSnapshots is whether the members took the objects of the slots
	// they gained from each other (--peer-snapshots).
	PeerSnapshots bool `json:"peerSnapshots,omitempty"`
}

// Event marks a moment of the run on the charts.
type Event struct {
	At   float64 `json:"at"`
	What string  `json:"what"`
}

// Window is a rebalance: from the scale request until the ring settled.
type Window struct {
	From, To int
	// Start and End are seconds since the start; End is 0 if it never
	// settled.
	Start, End float64
	// Synced is when, after End, every member's cache had synced every
	// slot it serves (kubeshard_member_slots_served), in seconds since the
	// start; 0 if not seen.
	Synced float64
	// Lists is the lists of LargeData the members sent from the scale
	// request until Synced (or End): LIST requests, and watches that began
	// with every object (client-go's streaming list), by the API server's
	// audit log; -1 if not measured.
	Lists int
}

// Fault is one fault injected while the objects were changed, and how the
// ring came back from it.
type Fault struct {
	// Kind is kill (SIGKILL of a member; the pod runner restarts it), stop
	// (SIGSTOP of a member for twice the lease, then SIGCONT) or
	// apiserver-restart.
	Kind string `json:"kind"`
	// At is the signal, or the API server's stop, in seconds since the start.
	At float64 `json:"at"`
	// Member is the member signalled and Slots the number of slots it
	// owned; Coordinator tells whether it had been the ring's coordinator.
	Member      string `json:"member,omitempty"`
	Slots       int    `json:"slots,omitempty"`
	Coordinator bool   `json:"coordinator,omitempty"`
	// ServedAgain is from the signal until every one of the member's slots
	// was served again with a synced cache (by another member, or by the
	// member's next process), in seconds; -1 if that did not happen.
	ServedAgain float64 `json:"servedAgainSeconds,omitempty"`
	// Created objects in the member's slots (any slots, after an API server
	// restart), one every half second from the signal; Ready is the time of
	// each from its create to Ready, and FirstReady that of the one created
	// at the signal, from the signal. NotReady counts those never Ready.
	Created    int         `json:"created"`
	Ready      Percentiles `json:"ready"`
	FirstReady float64     `json:"firstReadySeconds"`
	NotReady   int         `json:"notReady,omitempty"`
	// Paused is how long a stopped member was frozen; ExitAfterResume how
	// long it ran after SIGCONT before it exited (it must fence itself),
	// -1 if it did not exit; StartedWhilePaused the reconciles its journal
	// shows started between the SIGSTOP and that exit (want 0).
	Paused             float64 `json:"pausedSeconds,omitempty"`
	ExitAfterResume    float64 `json:"exitAfterResumeSeconds,omitempty"`
	StartedWhilePaused int     `json:"startedWhilePaused,omitempty"`
	// Settled is from the signal until the ring was settled again with
	// every member, the lost one's next process included; -1 if not.
	Settled float64 `json:"settledSeconds,omitempty"`
	// Down is how long a restart of the API server took, until ready.
	// CacheInit is how long its watch cache of LargeData then took to
	// initialize (it lists them all from storage) and Refused the requests of
	// LargeData it answered 429 meanwhile. Lists counts, per resource, the
	// LIST requests the new process answered (2xx) until Window seconds after
	// it was ready; MemberLists and HarnessLists split those of LargeData
	// between the members and the harness (pages of its tracker's list after
	// its watch broke), from the API server's audit log;
	// Watches the LargeData watches open at the end of that window (one
	// per informer). MemberRestarts counts members' processes restarted
	// meanwhile (want 0: they recover in place).
	Down           float64        `json:"downSeconds,omitempty"`
	Window         float64        `json:"windowSeconds,omitempty"`
	CacheInit      float64        `json:"largeDataCacheInitSeconds,omitempty"`
	Refused        int            `json:"largeDataRefused,omitempty"`
	Lists          map[string]int `json:"lists,omitempty"`
	MemberLists    int            `json:"memberLargeDataLists"`
	HarnessLists   int            `json:"harnessLargeDataLists,omitempty"`
	Watches        int            `json:"largeDataWatches,omitempty"`
	MemberRestarts int            `json:"memberRestarts,omitempty"`
	// Error says why the fault's figures are incomplete.
	Error string `json:"error,omitempty"`
}

// Journal is what the members' reconcile journals showed at the end.
type Journal struct {
	// Entries is the number of reconciles recorded.
	Entries int `json:"entries"`
	// Overlaps are pairs of reconciles of one slot by two members at once;
	// Excused those where one was in flight when its member was frozen and
	// sent nothing after SIGCONT (its context had ended: see
	// ARCHITECTURE.md). Both stay listed in Details.
	Overlaps int      `json:"overlaps"`
	Excused  int      `json:"excused"`
	Details  []string `json:"details,omitempty"`
	// Missing are the objects never reconciled ok at their final
	// generation; Objects how many were checked.
	Missing []string `json:"missing,omitempty"`
	Objects int      `json:"objects"`
	// Members counts each member's reconciles.
	Members map[string]int `json:"members"`
}

// Input is everything measured.
type Input struct {
	Scenario   Scenario
	StartedAt  time.Time
	Incomplete string
	Baseline   *workload.Result
	Create     *workload.Result
	Churn      *workload.Result
	Cleanup    *workload.Result
	// APIServerCPU and APIServerHeap are the API server's profiles, if taken.
	APIServerCPU  *apiprofile.CPU
	APIServerHeap *apiprofile.Heap
	// CreateStart and AllReconciled are seconds since the start: the first
	// create and the moment every object was reconciled (0 if never).
	CreateStart, AllReconciled float64
	Stats                      tracker.Stats
	Samples                    []tracker.Sample
	// IdleWrites are when the tracker saw each of its IdleWrites.
	IdleWrites []float32
	Snapshots  []sampler.Snapshot
	Events     []Event
	Rebalances []Window
	Faults     []Fault
	Journal    *Journal
}

// Percentiles of latencies, in seconds.
type Percentiles struct {
	Count int     `json:"count"`
	P50   float64 `json:"p50"`
	P90   float64 `json:"p90"`
	P99   float64 `json:"p99"`
	Max   float64 `json:"max"`
}

// Rebalance is the figures of one scale event.
type Rebalance struct {
	From int `json:"from"`
	To   int `json:"to"`
	// At is the scale request, seconds since the start.
	At float64 `json:"at"`
	// Seconds until the ring settled with To members; -1 if it did not.
	Seconds float64 `json:"seconds"`
	// CacheSyncedSeconds until, the ring settled, every member served its
	// slots from a synced cache (the newcomer had listed its slots); -1 if
	// not seen.
	CacheSyncedSeconds float64 `json:"cacheSyncedSeconds"`
	// Latency of the spec changes sent during the rebalance: from the scale
	// request until every member served its slots from a synced cache (or,
	// if that was not measured, until the ring settled).
	Latency Percentiles `json:"latency"`
	// IdleWrites are writes during the rebalance to LargeData objects that
	// had been reconciled and unchanged for tracker.IdleAfter and stayed so:
	// writes caused by the rebalance itself.
	IdleWrites int `json:"idleWrites"`
	// LargeDataLists is the lists of LargeData the members sent during the
	// rebalance (Window.Lists); -1 if not measured.
	LargeDataLists int `json:"largeDataLists"`
}

// MemberFigures are one member's figures over the run.
type MemberFigures struct {
	Name         string  `json:"name"`
	Slots        int32   `json:"slots"`
	Objects      int     `json:"objects"`
	RSSBytes     float64 `json:"rssBytes"`
	PeakRSSBytes float64 `json:"peakRssBytes"`
	HeapBytes    float64 `json:"heapInuseBytes"`
	MeanCPU      float64 `json:"meanCpuCores"`
}

// ServerMemory is the API server's memory and its etcd database's size.
type ServerMemory struct {
	// Objects is the number of the run's objects at that sample.
	Objects      int     `json:"objects"`
	RSSBytes     float64 `json:"rssBytes"`
	PeakRSSBytes float64 `json:"peakRssBytes"`
	HeapBytes    float64 `json:"heapInuseBytes"`
	StorageBytes float64 `json:"storageBytes"`
}

// LatencyBucket is the latency percentiles of the generations reconciled
// in one interval.
type LatencyBucket struct {
	At float64 `json:"at"`
	Percentiles
}

// Report is report.json.
type Report struct {
	Scenario   Scenario  `json:"scenario"`
	StartedAt  time.Time `json:"startedAt"`
	Complete   bool      `json:"complete"`
	Incomplete string    `json:"incomplete,omitempty"`

	Baseline *workload.Result `json:"baseline,omitempty"`
	Create   *workload.Result `json:"create,omitempty"`
	// CreateRateVsBaseline is the harness's create rate over its slices
	// that alternated with the baseline's (Create.FirstRate) divided by the
	// baseline's rate.
	CreateRateVsBaseline float64          `json:"createRateVsBaseline,omitempty"`
	Churn                *workload.Result `json:"churn,omitempty"`
	Cleanup              *workload.Result `json:"cleanup,omitempty"`
	// APIServerCPU splits a CPU profile of the API server, taken during the
	// creates, into phases per created object; APIServerHeap is its live heap
	// once every object was reconciled.
	APIServerCPUProfile  *apiprofile.CPU  `json:"apiServerCpuProfile,omitempty"`
	APIServerHeapProfile *apiprofile.Heap `json:"apiServerHeapProfile,omitempty"`

	// TotalSeconds is from the first create until every object was
	// reconciled; 0 if that did not happen.
	TotalSeconds float64 `json:"totalSeconds"`
	// CreateLatency and UpdateLatency: time to reconciled of creates and of
	// spec changes.
	CreateLatency Percentiles `json:"createLatency"`
	UpdateLatency Percentiles `json:"updateLatency"`

	Rebalances []Rebalance     `json:"rebalances,omitempty"`
	Faults     []Fault         `json:"faults,omitempty"`
	Journal    *Journal        `json:"journal,omitempty"`
	Members    []MemberFigures `json:"members"`
	Tracker    tracker.Stats   `json:"tracker"`
	IdleWrites int             `json:"idleWrites"`
	// IdleWriteTimes are when (seconds since the start) each was seen.
	IdleWriteTimes []float32 `json:"idleWriteTimes,omitempty"`
	APIServerCPU   float64   `json:"apiServerMeanCpuCores,omitempty"`
	// APIServerMemory is the API server's memory and its etcd database's
	// size at the last sample, with the API server's peak resident memory.
	APIServerMemory *ServerMemory `json:"apiServerMemory,omitempty"`
	// LoadAverage is the machine's mean one-minute load average.
	LoadAverage float64            `json:"meanLoadAverage,omitempty"`
	APIServer   map[string]float64 `json:"apiServerMeanRequestsPerSecond,omitempty"`
	LargeData   map[string]float64 `json:"largeDataMeanRequestsPerSecond,omitempty"`

	Events          []Event            `json:"events"`
	LatencyTimeline []LatencyBucket    `json:"latencyTimeline"`
	Timeline        []sampler.Snapshot `json:"timeline"`
}

// bucketSeconds is the width of a latency timeline bucket.
const bucketSeconds = 10

// Build computes the figures.
func Build(in Input) Report {
	r := Report{
		Scenario: in.Scenario, StartedAt: in.StartedAt, Incomplete: in.Incomplete, Complete: in.Incomplete == "",
		Baseline: in.Baseline, Create: in.Create, Churn: in.Churn, Cleanup: in.Cleanup,
		APIServerCPUProfile: in.APIServerCPU, APIServerHeapProfile: in.APIServerHeap,
		Tracker: in.Stats, IdleWrites: len(in.IdleWrites), IdleWriteTimes: in.IdleWrites, Events: in.Events, Timeline: in.Snapshots,
	}
	if r.Events == nil {
		r.Events = []Event{}
	}
	if in.Baseline != nil && in.Create != nil && in.Baseline.Rate > 0 && in.Create.FirstRate > 0 {
		r.CreateRateVsBaseline = in.Create.FirstRate / in.Baseline.Rate
	}
	if in.AllReconciled > 0 {
		r.TotalSeconds = in.AllReconciled - in.CreateStart
	}
	var creates, updates []float64
	for _, s := range in.Samples {
		if s.Create {
			creates = append(creates, float64(s.Latency))
		} else {
			updates = append(updates, float64(s.Latency))
		}
	}
	r.CreateLatency, r.UpdateLatency = PercentilesOf(creates), PercentilesOf(updates)
	r.LatencyTimeline = timeline(in.Samples)
	for _, w := range in.Rebalances {
		r.Rebalances = append(r.Rebalances, rebalance(w, in))
	}
	r.Faults, r.Journal = in.Faults, in.Journal
	r.Members = members(in.Snapshots)
	r.APIServer, r.LargeData = meanRates(in.Snapshots)
	var cpu, load float64
	var n, nLoad int
	for _, s := range in.Snapshots {
		if s.APIServerCPU > 0 {
			cpu += s.APIServerCPU
			n++
		}
		if s.LoadAverage > 0 {
			load += s.LoadAverage
			nLoad++
		}
	}
	if n > 0 {
		r.APIServerCPU = round(cpu / float64(n))
	}
	r.APIServerMemory = serverMemory(in.Snapshots)
	if nLoad > 0 {
		r.LoadAverage = round(load / float64(nLoad))
	}
	return r
}

// PercentilesOf returns the percentiles of latencies v, in seconds.
func PercentilesOf(v []float64) Percentiles {
	if len(v) == 0 {
		return Percentiles{}
	}
	slices.Sort(v)
	at := func(q float64) float64 { return round(v[min(len(v)-1, int(math.Ceil(q*float64(len(v))))-1)]) }
	return Percentiles{Count: len(v), P50: at(0.50), P90: at(0.90), P99: at(0.99), Max: round(v[len(v)-1])}
}

func round(v float64) float64 { return math.Round(v*1000) / 1000 }

func timeline(samples []tracker.Sample) []LatencyBucket {
	buckets := map[int][]float64{}
	for _, s := range samples {
		b := int(s.At) / bucketSeconds
		buckets[b] = append(buckets[b], float64(s.Latency))
	}
	keys := slices.Sorted(func(yield func(int) bool) {
		for k := range buckets {
			if !yield(k) {
				return
			}
		}
	})
	out := make([]LatencyBucket, 0, len(keys))
	for _, k := range keys {
		out = append(out, LatencyBucket{At: float64(k*bucketSeconds + bucketSeconds/2), Percentiles: PercentilesOf(buckets[k])})
	}
	return out
}

func rebalance(w Window, in Input) Rebalance {
	r := Rebalance{From: w.From, To: w.To, At: round(w.Start), Seconds: -1, CacheSyncedSeconds: -1, LargeDataLists: w.Lists}
	if w.Synced > 0 {
		r.CacheSyncedSeconds = round(w.Synced - w.Start)
	}
	end := w.End
	if end > 0 {
		r.Seconds = round(end - w.Start)
		// The ring settles when the members publish their slots; the
		// rebalance is over for the objects when the newcomer's cache
		// has them.
		end = max(end, w.Synced)
	} else {
		end = math.Inf(1)
	}
	var lat []float64
	for _, s := range in.Samples {
		sent := float64(s.At) - float64(s.Latency)
		if !s.Create && sent >= w.Start && sent <= end {
			lat = append(lat, float64(s.Latency))
		}
	}
	r.Latency = PercentilesOf(lat)
	for _, at := range in.IdleWrites {
		if float64(at) >= w.Start && float64(at) <= end {
			r.IdleWrites++
		}
	}
	return r
}

func members(snaps []sampler.Snapshot) []MemberFigures {
	byName := map[string]*MemberFigures{}
	cpuSamples := map[string]int{}
	var order []string
	for _, s := range snaps {
		for _, m := range s.Members {
			f, ok := byName[m.Name]
			if !ok {
				f = &MemberFigures{Name: m.Name}
				byName[m.Name] = f
				order = append(order, m.Name)
			}
			f.Slots, f.Objects = m.Slots, m.Objects
			if m.RSS > 0 {
				f.RSSBytes, f.HeapBytes = m.RSS, m.Heap
				f.PeakRSSBytes = max(f.PeakRSSBytes, m.RSS)
			}
			if m.CPU > 0 {
				f.MeanCPU += m.CPU
				cpuSamples[m.Name]++
			}
		}
	}
	// The last sample with a ring says who is still a member.
	var last map[string]bool
	for i := len(snaps) - 1; i >= 0 && last == nil; i-- {
		if len(snaps[i].Members) > 0 {
			last = map[string]bool{}
			for _, m := range snaps[i].Members {
				last[m.Name] = true
			}
		}
	}
	out := []MemberFigures{}
	slices.Sort(order)
	for _, name := range order {
		f := byName[name]
		if n := cpuSamples[name]; n > 0 {
			f.MeanCPU = round(f.MeanCPU / float64(n))
		}
		if last != nil && !last[name] {
			f.Slots, f.Objects = 0, 0
		}
		out = append(out, *f)
	}
	return out
}

func serverMemory(snaps []sampler.Snapshot) *ServerMemory {
	var m *ServerMemory
	var peak float64
	for _, s := range snaps {
		if s.APIServerRSS > 0 {
			peak = max(peak, s.APIServerRSS)
			m = &ServerMemory{Objects: s.Objects, RSSBytes: s.APIServerRSS, HeapBytes: s.APIServerHeap, StorageBytes: s.StorageBytes}
		}
	}
	if m != nil {
		m.PeakRSSBytes = peak
	}
	return m
}

func meanRates(snaps []sampler.Snapshot) (all, largeData map[string]float64) {
	mean := func(get func(sampler.Snapshot) map[string]float64) map[string]float64 {
		sums, n := map[string]float64{}, 0
		for _, s := range snaps {
			if m := get(s); m != nil {
				n++
				for k, v := range m {
					sums[k] += v
				}
			}
		}
		if n == 0 {
			return nil
		}
		for k := range sums {
			sums[k] = round(sums[k] / float64(n))
			if sums[k] == 0 {
				delete(sums, k)
			}
		}
		return sums
	}
	return mean(func(s sampler.Snapshot) map[string]float64 { return s.APIRequests }),
		mean(func(s sampler.Snapshot) map[string]float64 { return s.LargeDataRequests })
}

// Write writes every report into dir, creating it.
func Write(dir string, r Report) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("creating the report folder: %w", err)
	}
	data, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, FileJSON), data, 0o644); err != nil {
		return fmt.Errorf("writing %s: %w", FileJSON, err)
	}
	if err := os.WriteFile(filepath.Join(dir, FileMarkdown), []byte(Markdown(r)), 0o644); err != nil {
		return fmt.Errorf("writing %s: %w", FileMarkdown, err)
	}
	return charts(dir, r)
}
