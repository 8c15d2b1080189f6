package report

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kubeshard/kubeshard/loadtest/internal/sampler"
	"github.com/kubeshard/kubeshard/loadtest/internal/tracker"
	"github.com/kubeshard/kubeshard/loadtest/internal/workload"
)

func TestPercentilesAreNearestRank(t *testing.T) {
	// 1..200 in reverse: the input order must not matter.
	v := make([]float64, 200)
	for i := range v {
		v[i] = float64(200 - i)
	}
	got := PercentilesOf(v)
	want := Percentiles{Count: 200, P50: 100, P90: 180, P99: 198, Max: 200}
	if got != want {
		t.Errorf("percentiles of 1..200 = %+v, want %+v", got, want)
	}
	if got := PercentilesOf([]float64{0.25}); got != (Percentiles{Count: 1, P50: 0.25, P90: 0.25, P99: 0.25, Max: 0.25}) {
		t.Errorf("percentiles of one value = %+v", got)
	}
	if got := PercentilesOf(nil); got != (Percentiles{}) {
		t.Errorf("percentiles of nothing = %+v, want zero", got)
	}
}

// input is a small run: 4 creates, a scale 2 -> 3 from 20 s to 30 s with two
// spec changes sent during it and one after it settled but before the caches
// synced at 32 s, two idle writes (one during the rebalance), and a member
// that left before the end.
func input() Input {
	return Input{
		Scenario:  Scenario{Objects: 4, Namespaces: 1, Members: 2, Concurrency: 8, Scale: "3@10s", LocalCluster: true, Store: "postgres"},
		StartedAt: time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC),
		Baseline:  &workload.Result{Done: 100, Rate: 50},
		Create:    &workload.Result{Done: 4, Rate: 40, FirstRate: 45},
		Churn:     &workload.Result{Done: 3, Rate: 0.1},
		// The first create at 2 s, every object reconciled at 14.5 s.
		CreateStart: 2, AllReconciled: 14.5,
		Samples: []tracker.Sample{
			{At: 3, Latency: 1, Create: true},
			{At: 4, Latency: 2, Create: true},
			{At: 5, Latency: 3, Create: true},
			{At: 14.5, Latency: 12, Create: true},
			// Spec changes sent at 21 s and 24 s (during the rebalance) and
			// at 31 s (after).
			{At: 22, Latency: 1, Create: false},
			{At: 28, Latency: 4, Create: false},
			{At: 31.5, Latency: 0.5, Create: false},
		},
		IdleWrites: []float32{25, 40},
		Snapshots: []sampler.Snapshot{
			{At: 10, Members: []sampler.Member{
				{Name: "op-0", Slots: 8, Objects: 2, RSS: 100 << 20, Heap: 50 << 20, CPU: 0.2},
				{Name: "op-1", Slots: 8, Objects: 2, RSS: 120 << 20, Heap: 60 << 20, CPU: 0.4},
			}, APIRequests: map[string]float64{"POST": 10, "PATCH": 20}, LargeDataRequests: map[string]float64{"POST": 10, "PATCH": 0},
				APIServerCPU: 1, LoadAverage: 2, APIServerRSS: 900 << 20, APIServerHeap: 600 << 20, StorageBytes: 50 << 20, Objects: 4},
			{At: 20, Members: []sampler.Member{
				{Name: "op-0", Slots: 5, Objects: 1, RSS: 90 << 20, Heap: 40 << 20, CPU: 0.4},
				{Name: "op-1", Slots: 6, Objects: 2, RSS: 130 << 20, Heap: 70 << 20, CPU: 0.2},
				{Name: "op-2", Slots: 5, Objects: 1, RSS: 60 << 20, Heap: 30 << 20, CPU: 0.3},
			}, APIRequests: map[string]float64{"POST": 0, "PATCH": 40}, LargeDataRequests: map[string]float64{"PATCH": 30},
				APIServerCPU: 1.5, LoadAverage: 4, APIServerRSS: 800 << 20, APIServerHeap: 500 << 20, StorageBytes: 60 << 20, Objects: 4},
			// op-1 left: it owns nothing any more, whatever it owned last.
			{At: 30, Members: []sampler.Member{
				{Name: "op-0", Slots: 8, Objects: 2, RSS: 95 << 20, Heap: 45 << 20},
				{Name: "op-2", Slots: 8, Objects: 2, RSS: 70 << 20, Heap: 35 << 20},
			}},
		},
		Rebalances: []Window{{From: 2, To: 3, Start: 20, End: 30, Synced: 32, Lists: 7}, {From: 3, To: 4, Start: 35, Lists: -1}},
	}
}

func TestBuild(t *testing.T) {
	r := Build(input())

	if !r.Complete || r.TotalSeconds != 12.5 {
		t.Errorf("complete %v, total %v s; want complete, 12.5 s from the first create to all reconciled", r.Complete, r.TotalSeconds)
	}
	if r.CreateRateVsBaseline != 0.9 {
		t.Errorf("create rate vs baseline = %v, want 45/50 = 0.9", r.CreateRateVsBaseline)
	}
	if r.CreateLatency.Count != 4 || r.CreateLatency.P50 != 2 || r.CreateLatency.Max != 12 {
		t.Errorf("create latency %+v, want 4 creates, p50 2 s, max 12 s", r.CreateLatency)
	}
	if r.UpdateLatency.Count != 3 || r.UpdateLatency.Max != 4 {
		t.Errorf("update latency %+v, want 3 spec changes, max 4 s", r.UpdateLatency)
	}

	if len(r.Rebalances) != 2 {
		t.Fatalf("%d rebalances, want 2", len(r.Rebalances))
	}
	rb := r.Rebalances[0]
	// It lasts, for the objects, until the newcomer's cache had them: the
	// spec change sent at 31 s counts.
	if rb.Seconds != 10 || rb.CacheSyncedSeconds != 12 || rb.Latency.Count != 3 || rb.Latency.Max != 4 || rb.IdleWrites != 1 {
		t.Errorf("rebalance 2 -> 3 = %+v; want 10 s, caches synced at 12 s, the 3 spec changes sent until then (max 4 s), 1 idle write", rb)
	}
	// A rebalance that never settled counts to the end of the run.
	if rb := r.Rebalances[1]; rb.Seconds != -1 || rb.CacheSyncedSeconds != -1 || rb.IdleWrites != 1 || rb.Latency.Count != 0 {
		t.Errorf("unsettled rebalance 3 -> 4 = %+v; want -1 s, the idle write at 40 s, no spec change", rb)
	}
	if r.IdleWrites != 2 {
		t.Errorf("idle writes, whole run = %d, want 2", r.IdleWrites)
	}

	want := []MemberFigures{
		{Name: "op-0", Slots: 8, Objects: 2, RSSBytes: 95 << 20, PeakRSSBytes: 100 << 20, HeapBytes: 45 << 20, MeanCPU: 0.3},
		{Name: "op-1", RSSBytes: 130 << 20, PeakRSSBytes: 130 << 20, HeapBytes: 70 << 20, MeanCPU: 0.3},
		{Name: "op-2", Slots: 8, Objects: 2, RSSBytes: 70 << 20, PeakRSSBytes: 70 << 20, HeapBytes: 35 << 20, MeanCPU: 0.3},
	}
	if len(r.Members) != len(want) {
		t.Fatalf("members %+v, want %+v", r.Members, want)
	}
	for i := range want {
		if r.Members[i] != want[i] {
			t.Errorf("member %d = %+v, want %+v", i, r.Members[i], want[i])
		}
	}

	if r.APIServer["PATCH"] != 30 || r.APIServer["POST"] != 5 || r.LargeData["PATCH"] != 15 {
		t.Errorf("mean request rates %v / LargeData %v; want PATCH 30, POST 5 / PATCH 15", r.APIServer, r.LargeData)
	}
	if r.APIServerCPU != 1.25 || r.LoadAverage != 3 {
		t.Errorf("API server CPU %v, load average %v; want the means over the samples that have them, 1.25 and 3", r.APIServerCPU, r.LoadAverage)
	}
	// The last sample with the API server's metrics, and the peak.
	if m := r.APIServerMemory; m == nil || *m != (ServerMemory{Objects: 4, RSSBytes: 800 << 20, PeakRSSBytes: 900 << 20, HeapBytes: 500 << 20, StorageBytes: 60 << 20}) {
		t.Errorf("API server memory %+v; want the second sample's, peak RSS 900 MiB", m)
	}
	var buckets []string
	for _, b := range r.LatencyTimeline {
		buckets = append(buckets, fmt.Sprintf("%g:%d", b.At, b.Count))
	}
	if got := strings.Join(buckets, " "); got != "5:3 15:1 25:2 35:1" {
		t.Errorf("latency timeline (bucket middle:samples) %s, want 5:3 15:1 25:2 35:1", got)
	}
}

func TestBuildIncompleteRun(t *testing.T) {
	in := input()
	in.Incomplete = "interrupted"
	in.AllReconciled = 0
	in.Stats = tracker.Stats{Reconciled: 3}
	r := Build(in)
	if r.Complete || r.TotalSeconds != 0 {
		t.Errorf("complete %v, total %v; want incomplete with no total", r.Complete, r.TotalSeconds)
	}
	md := Markdown(r)
	for _, want := range []string{"**Incomplete:** interrupted", "not reached (3 of 4 reconciled)"} {
		if !strings.Contains(md, want) {
			t.Errorf("summary lacks %q:\n%s", want, md)
		}
	}
}

func TestWrite(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "report")
	r := Build(input())
	if err := Write(dir, r); err != nil {
		t.Fatal(err)
	}

	data, err := os.ReadFile(filepath.Join(dir, FileJSON))
	if err != nil {
		t.Fatal(err)
	}
	var back Report
	if err := json.Unmarshal(data, &back); err != nil {
		t.Fatalf("report.json does not parse: %v", err)
	}
	if back.TotalSeconds != r.TotalSeconds || len(back.Members) != 3 || back.Rebalances[0].IdleWrites != 1 {
		t.Errorf("report.json read back: total %v, %d members, rebalances %+v", back.TotalSeconds, len(back.Members), back.Rebalances)
	}

	md, err := os.ReadFile(filepath.Join(dir, FileMarkdown))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"Store: PostgreSQL (a throwaway server on loopback), shared by the members.",
		"| harness / baseline create rate | 0.90 |",
		"| first create to every object reconciled | 12.5 s |",
		"| scale 2 -> 3 at 20 s: to the ring settled | 10.0 s |",
		"| scale 2 -> 3: to every member serving its slots from a synced cache (the newcomer's list done) | 12.0 s |",
		"| scale 2 -> 3: lists of LargeData the members sent during it (LIST, or a watch from every object; the API server's audit log) | 7 |",
		"| scale 3 -> 4 at 35 s: to the ring settled | did not settle |",
		"| scale 3 -> 4: to every member serving its slots from a synced cache (the newcomer's list done) | not seen |",
		"| op-2 | 8 | 2 | 70.0 | 70.0 | 35.0 | 0.30 |",
		"| API server memory at the last sample | RSS 800 MiB (peak 900 MiB), heap in use 500 MiB, with 4 objects |",
		"| etcd database size at the last sample | 60 MiB |",
	} {
		if !bytes.Contains(md, []byte(want)) {
			t.Errorf("summary.md lacks %q:\n%s", want, md)
		}
	}

	if bytes.Contains(md, []byte("scale 3 -> 4: lists of LargeData")) {
		t.Error("summary.md gives a count of lists for a rebalance where none was measured")
	}

	for _, f := range []string{FileLatency, FileObjects, FileMemory, FileCPU} {
		png, err := os.ReadFile(filepath.Join(dir, f))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.HasPrefix(png, []byte("\x89PNG\r\n\x1a\n")) || len(png) < 2000 {
			t.Errorf("%s is not a drawn PNG (%d bytes)", f, len(png))
		}
	}
}

// The summary says how many writes each created object and each generation
// cost the API server, as the watch saw them: the figure the operator's
// write path is judged by.
func TestMarkdownWritesPerObject(t *testing.T) {
	in := input()
	in.Stats = tracker.Stats{Present: 1000, Reconciled: 1000, Events: 2100, SpecWrites: 100, MetadataWrites: 0, StatusWrites: 1100}
	md := Markdown(Build(in))
	want := "| LargeData writes seen on the watch | per created object 1 create + 0.00 metadata; per generation (create or spec change) 1.00 status |"
	if !strings.Contains(md, want) {
		t.Errorf("summary lacks %q:\n%s", want, md)
	}
}

// The summary says how the ring came back from each fault, and what the
// journals showed: a fault that was not recovered from says so.
func TestMarkdownFaultsAndJournal(t *testing.T) {
	in := input()
	in.Faults = []Fault{
		{Kind: "kill", At: 95, Member: "op-1", Slots: 256, ServedAgain: 4.25, Created: 40,
			Ready: Percentiles{Count: 40, P50: 1.5, P90: 2, P99: 3, Max: 3.5}, FirstReady: 5.5, Settled: 6},
		{Kind: "stop", At: 200, Member: "op-2", Slots: 256, ServedAgain: -1, Created: 40, NotReady: 2,
			Ready: Percentiles{Count: 38, P50: 1, P90: 2, P99: 3, Max: 4}, FirstReady: -1, Settled: -1,
			Paused: 30.1, ExitAfterResume: 0.2, StartedWhilePaused: 1, Error: "not served | within 75s"},
		{Kind: "apiserver-restart", At: 400, Down: 9.5, Lists: map[string]int{"largedata": 59, "leases": 1}, MemberLists: 9, HarnessLists: 50, Watches: 9, Window: 60, CacheInit: 12.5, Refused: 140,
			Created: 40, Ready: Percentiles{Count: 40, P50: 1, P90: 1, P99: 1, Max: 1}, FirstReady: 1.2, Settled: 70},
	}
	in.Journal = &Journal{Entries: 5000, Objects: 1120, Overlaps: 3, Excused: 2, Missing: []string{"ns/a"},
		Details: []string{"slot 7: op-2 reconciled ns/a ..."}}
	md := Markdown(Build(in))
	for _, want := range []string{
		"| kill | 95 | op-1 (256) | 4.2 | p50 1.50 s, p90 2.00 s, p99 3.00 s, max 3.50 s (40) | 5.5 | 6.0 |  |",
		"| stop | 200 | op-2 (256) | not reached | p50 1.00 s, p90 2.00 s, p99 3.00 s, max 4.00 s (38); 2 never Ready | not reached | not reached | frozen 30.1 s; exited 0.2 s after SIGCONT; reconciles started while frozen: 1; error: not served / within 75s |",
		"| apiserver-restart | 400 | - | - | p50 1.00 s, p90 1.00 s, p99 1.00 s, max 1.00 s (40) | 1.2 | 70.0 | down 9.5 s; its LargeData watch cache initialized in 12.5 s, 140 LargeData requests refused (429) meanwhile; LISTs answered in the 60 s after: largedata 59, leases 1 (of LargeData, 9 from the members, 50 from the harness); LargeData watches open: 9; member restarts: 0 |",
		"**1 overlapping reconciles of one slot by two members**, besides 2 excused",
		"**1 objects never reconciled at their final generation**",
		"- missing (first 1): ns/a",
	} {
		if !strings.Contains(md, want) {
			t.Errorf("summary lacks %q:\n%s", want, md)
		}
	}
}
