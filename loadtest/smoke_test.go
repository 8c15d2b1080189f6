package main

import (
	"encoding/json"
	"image/png"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kubeshard/kubeshard/loadtest/internal/report"
)

// TestSmoke runs the whole `run` scenario at a small size on a local
// cluster: 5,000 objects, 2 members with peer snapshots, a scale to 3 during
// churn, and checks what a user of the harness relies on: every object
// reconciled and measured, the rebalance measured, the newcomer's objects
// taken from its peers (no list of LargeData by a member during it, by the
// API server's audit log) and no object outside the moved slots rewritten,
// the reports written and readable, and cleanup removing everything.
func TestSmoke(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a local cluster and operator processes")
	}
	const objects, baseline = 5000, 500
	out := t.TempDir()
	sc := scenario{
		client:           clientFlags{qps: 1000, burst: 2000},
		objects:          objectFlags{prefix: "smoke", namespaces: 5, objects: objects},
		write:            writeFlags{concurrency: 32, items: 10, batchSize: 500},
		members:          2,
		baseline:         baseline,
		churnShare:       0.005,
		churnDuration:    20 * time.Second,
		scale:            "3@2s",
		out:              out,
		workDir:          t.TempDir(),
		metricsAddr:      "127.0.0.1:0",
		sampleInterval:   2 * time.Second,
		reconcileTimeout: 5 * time.Minute,
		rebalanceTimeout: 5 * time.Minute,
		profileLength:    5 * time.Second,
		cleanup:          true,
		peerSnapshots:    true,
		operatorArgs:     "--kube-api-qps=1000 --kube-api-burst=2000 --max-concurrent-reconciles=16",
		ring:             "kubeshard-system/largedata",
		statefulSet:      "kubeshard-system/largedata-operator",
	}
	r, err := runScenario(t.Context(), &sc)
	if err != nil {
		t.Fatal(err)
	}

	if !r.Complete || r.Tracker.Reconciled != objects || r.CreateLatency.Count != objects {
		t.Errorf("complete %v, %d objects reconciled, %d create latencies; want every one of %d", r.Complete, r.Tracker.Reconciled, r.CreateLatency.Count, objects)
	}
	if r.TotalSeconds <= 0 || r.CreateLatency.P99 <= 0 || r.CreateLatency.P50 > r.CreateLatency.P99 {
		t.Errorf("total %v s, create latency %+v: want a positive total and ordered percentiles", r.TotalSeconds, r.CreateLatency)
	}
	if r.Baseline == nil || r.Baseline.Done != baseline || r.Create == nil || r.Create.Done != objects || r.Create.FirstRate <= 0 || r.CreateRateVsBaseline <= 0 {
		t.Errorf("baseline %+v, create %+v, ratio %v: want %d and %d created and both rates", r.Baseline, r.Create, r.CreateRateVsBaseline, baseline, objects)
	}
	if r.Churn == nil || r.Churn.Done == 0 || r.UpdateLatency.Count == 0 {
		t.Errorf("churn %+v, update latencies %d: want spec changes, reconciled and measured", r.Churn, r.UpdateLatency.Count)
	}
	if len(r.Rebalances) != 1 || r.Rebalances[0].From != 2 || r.Rebalances[0].To != 3 || r.Rebalances[0].Seconds < 0 ||
		r.Rebalances[0].CacheSyncedSeconds < r.Rebalances[0].Seconds {
		t.Errorf("rebalances %+v: want one 2 -> 3 that settled, and the newcomer's cache synced after that", r.Rebalances)
	} else if n := r.Rebalances[0].LargeDataLists; n != 0 {
		t.Errorf("the members sent %d lists of LargeData during the rebalance; want 0: the newcomer takes its objects from its peers", n)
	}
	counted, live := 0, 0
	for _, m := range r.Members {
		counted += m.Objects
		if m.Slots > 0 {
			live++
			if m.RSSBytes <= 0 {
				t.Errorf("member %s: no memory figure", m.Name)
			}
		}
	}
	if live != 3 || counted != objects {
		t.Errorf("members %+v: want 3 with slots, owning %d objects between them", r.Members, objects)
	}
	// The members keep the records in memory, so the new member rebuilds the
	// datasets of the slots it takes over and writes their status once more;
	// no other object may be written: at most one idle write per object the
	// new member owns.
	if moved := r.Members[len(r.Members)-1].Objects; r.IdleWrites > moved {
		t.Errorf("%d writes to idle LargeData objects; want at most one per object the new member took over (%d)", r.IdleWrites, moved)
	}
	// The webhook sets the finalizer with the slot label: a created object
	// costs its create and one status write. (An object the API server
	// admitted while the webhook was not answering yet gets both from the
	// labeler and the reconciler.)
	if r.Tracker.MetadataWrites > objects/100 {
		t.Errorf("%d metadata writes for %d created objects; want the finalizer and the label set at admission", r.Tracker.MetadataWrites, objects)
	}
	if c := r.APIServerCPUProfile; c == nil || c.Creates == 0 || c.MsPerCreate <= 0 || len(c.Phases) == 0 {
		t.Errorf("the API server's CPU profile %+v: want one taken during the creates, split per created object", c)
	} else if _, err := os.Stat(filepath.Join(out, c.File)); err != nil {
		t.Errorf("the CPU profile's file: %v", err)
	}
	if h := r.APIServerHeapProfile; h == nil || h.Objects != objects+baseline || h.BytesPerObject <= 0 {
		t.Errorf("the API server's heap %+v: want its live bytes per object with all %d objects", h, objects+baseline)
	}
	if r.Cleanup == nil || r.Cleanup.Done != objects+baseline || r.Cleanup.Failed != 0 {
		t.Errorf("cleanup %+v: want all %d objects deleted", r.Cleanup, objects+baseline)
	}

	// The reports.
	data, err := os.ReadFile(filepath.Join(out, report.FileJSON))
	if err != nil {
		t.Fatal(err)
	}
	var read report.Report
	if err := json.Unmarshal(data, &read); err != nil {
		t.Fatalf("%s: %v", report.FileJSON, err)
	}
	if read.Tracker.Reconciled != objects || len(read.Timeline) == 0 || len(read.LatencyTimeline) == 0 || read.Cleanup == nil {
		t.Errorf("%s: reconciled %d, %d samples, %d latency buckets, cleanup %v", report.FileJSON, read.Tracker.Reconciled, len(read.Timeline), len(read.LatencyTimeline), read.Cleanup)
	}
	md, err := os.ReadFile(filepath.Join(out, report.FileMarkdown))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"time to reconciled, creates", "scale 2 -> 3", "largedata-operator-2", "ms per created object", "KB per LargeData"} {
		if !strings.Contains(string(md), want) {
			t.Errorf("%s does not mention %q:\n%s", report.FileMarkdown, want, md)
		}
	}
	for _, chart := range []string{report.FileLatency, report.FileObjects, report.FileMemory, report.FileCPU} {
		f, err := os.Open(filepath.Join(out, chart))
		if err != nil {
			t.Fatal(err)
		}
		img, err := png.Decode(f)
		f.Close()
		if err != nil || img.Bounds().Dx() < 100 {
			t.Errorf("%s: not a chart (%v)", chart, err)
		}
	}
	t.Logf("FIGURES %s", strings.ReplaceAll(report.Markdown(*r), "\n", " "))
}

// TestSmokeFaults runs the scenario with a member killed and the API server
// restarted during the churn, on the PostgreSQL store, and checks what the
// fault figures promise a user: the lost member's slots served again, every
// object created meanwhile Ready, no member restarted by the API server's
// restart and no more lists than informers, and journals that show no
// overlapping reconciles and nothing missing.
func TestSmokeFaults(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a local cluster, PostgreSQL and operator processes")
	}
	const objects, perFault = 1000, 10
	sc := scenario{
		client:           clientFlags{qps: 1000, burst: 2000},
		objects:          objectFlags{prefix: "faults", namespaces: 5, objects: objects},
		write:            writeFlags{concurrency: 32, items: 10, batchSize: 500},
		members:          3,
		churnShare:       0.01,
		churnDuration:    30 * time.Second,
		faults:           "kill@2s,apiserver-restart@10s",
		faultObjects:     perFault,
		faultWindow:      15 * time.Second,
		postgres:         true,
		out:              t.TempDir(),
		workDir:          t.TempDir(),
		metricsAddr:      "127.0.0.1:0",
		sampleInterval:   2 * time.Second,
		reconcileTimeout: 5 * time.Minute,
		rebalanceTimeout: 5 * time.Minute,
		cleanup:          true,
		operatorArgs:     "--kube-api-qps=1000 --kube-api-burst=2000",
		ring:             "kubeshard-system/largedata",
		statefulSet:      "kubeshard-system/largedata-operator",
	}
	r, err := runScenario(t.Context(), &sc)
	if err != nil {
		t.Fatal(err)
	}
	if !r.Complete || r.Tracker.Reconciled != objects {
		t.Errorf("complete %v, %d of %d objects reconciled", r.Complete, r.Tracker.Reconciled, objects)
	}
	if len(r.Faults) != 2 {
		t.Fatalf("faults %+v: want the kill and the restart", r.Faults)
	}
	for _, f := range r.Faults {
		if f.Error != "" || f.Created != perFault || f.NotReady != 0 || f.Ready.Count != perFault || f.FirstReady < 0 || f.Settled < 0 {
			t.Errorf("%s: %+v; want every object created meanwhile Ready and the ring settled, without error", f.Kind, f)
		}
	}
	if kill := r.Faults[0]; kill.Kind != faultKill || kill.Member == "" || kill.Coordinator || kill.Slots == 0 || kill.ServedAgain <= 0 {
		t.Errorf("kill: %+v; want a member that is not the coordinator, its slots served again", kill)
	}
	restart := r.Faults[1]
	if restart.Kind != faultAPIServer || restart.Down <= 0 || restart.MemberRestarts != 0 {
		t.Errorf("apiserver-restart: %+v; want it down a while and no member restarted", restart)
	}
	// Each informer of LargeData lists once at most after the restart; each
	// holds one watch.
	// The audit log tells the members' lists from the harness's.
	if restart.Watches == 0 || restart.MemberLists > restart.Watches {
		t.Errorf("after the API server's restart the members listed LargeData %d times (the harness %d) with %d watches open; want at most one list per watch",
			restart.MemberLists, restart.HarnessLists, restart.Watches)
	}
	j := r.Journal
	if j == nil || j.Entries == 0 || j.Objects != objects+2*perFault || j.Overlaps != 0 || len(j.Missing) != 0 {
		t.Errorf("journal %+v: want the reconciles of all %d objects, no overlap, nothing missing", j, objects+2*perFault)
	}
	if r.Cleanup == nil || r.Cleanup.Done != objects+2*perFault {
		t.Errorf("cleanup %+v: want the %d objects and those the faults created deleted", r.Cleanup, objects)
	}
	t.Logf("FIGURES %s", strings.ReplaceAll(report.Markdown(*r), "\n", " "))
}
