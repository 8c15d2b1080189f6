package report

import (
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/kubeshard/kubeshard/loadtest/internal/workload"
)

// Markdown renders the summary.
func Markdown(r Report) string {
	var b strings.Builder
	s := r.Scenario
	fmt.Fprintf(&b, "# Load test, %s\n\n", r.StartedAt.UTC().Format("2006-01-02 15:04 UTC"))
	if !r.Complete {
		fmt.Fprintf(&b, "**Incomplete:** %s\n\n", r.Incomplete)
	}
	cluster := "local cluster (etcd, kube-apiserver, kube-controller-manager on loopback; members as local processes)"
	if !s.LocalCluster {
		cluster = "cluster of the given kubeconfig"
	}
	fmt.Fprintf(&b, "%d LargeData objects in %d namespaces, %d members, %s.", s.Objects, s.Namespaces, s.Members, cluster)
	if s.Concurrency > 0 {
		fmt.Fprintf(&b, " Objects: items %d, batch size %d. Client: concurrency %d, target rate %s, QPS %g, burst %d.",
			s.Items, s.BatchSize, s.Concurrency, rateText(s.Rate), s.QPS, s.Burst)
	}
	if s.ChurnSeconds > 0 {
		fmt.Fprintf(&b, " Churn: %.2f%% of the objects per second for %.0f s.", 100*s.ChurnShare, s.ChurnSeconds)
	}
	if s.Scale != "" {
		fmt.Fprintf(&b, " Scale: %s.", s.Scale)
	}
	if s.Faults != "" {
		fmt.Fprintf(&b, " Faults: %s.", s.Faults)
	}
	switch s.Store {
	case "postgres":
		b.WriteString(" Store: PostgreSQL (a throwaway server on loopback), shared by the members.")
	case "memory":
		b.WriteString(" Store: in memory, one per member.")
	}
	if s.PeerSnapshots {
		b.WriteString(" Peer snapshots: on (a member gaining slots takes their objects from the members serving them).")
	}
	if s.Storage == "kine" {
		b.WriteString(" The API server's storage: kine over PostgreSQL (a throwaway server of its own), not etcd.")
	}
	if s.APIServerEnv != "" {
		fmt.Fprintf(&b, " kube-apiserver's environment: `%s`.", s.APIServerEnv)
	}
	if s.APIServerArgs != "" {
		fmt.Fprintf(&b, " Extra kube-apiserver flags: `%s`.", s.APIServerArgs)
	}
	if s.OperatorArgs != "" {
		fmt.Fprintf(&b, " Extra operator flags: `%s`.", s.OperatorArgs)
	}
	b.WriteString("\n\n| figure | value |\n| --- | --: |\n")
	row := func(k string, format string, args ...any) {
		fmt.Fprintf(&b, "| %s | %s |\n", k, fmt.Sprintf(format, args...))
	}
	if r.Baseline != nil {
		row("bare client-go create loop (baseline), same concurrency and QPS", "%d objects, %.0f/s", r.Baseline.Done, r.Baseline.Rate)
	}
	if r.Create != nil {
		if r.Create.FirstRate > 0 {
			row("harness create rate, in the slices alternating with the baseline's", "%.0f/s", r.Create.FirstRate)
		}
		if r.CreateRateVsBaseline > 0 {
			row("harness / baseline create rate", "%.2f", r.CreateRateVsBaseline)
		}
		row("harness create rate, whole run", "%.0f/s (%d created, %d existed, %d failed, %d errors retried%s)",
			r.Create.Rate, r.Create.Done, r.Create.Skipped, r.Create.Failed, r.Create.Errors, lastError(r.Create))
	}
	if r.TotalSeconds > 0 {
		row("first create to every object reconciled", "%.1f s", r.TotalSeconds)
	} else {
		row("first create to every object reconciled", "not reached (%d of %d reconciled)", r.Tracker.Reconciled, s.Objects)
	}
	row("time to reconciled, creates", "%s", pct(r.CreateLatency))
	if r.Churn != nil {
		row("churn", "%d spec changes, %.0f/s (%d errors retried%s)", r.Churn.Done, r.Churn.Rate, r.Churn.Errors, lastError(r.Churn))
		row("time to reconciled, spec changes", "%s", pct(r.UpdateLatency))
	}
	for _, rb := range r.Rebalances {
		settled := "did not settle"
		if rb.Seconds >= 0 {
			settled = fmt.Sprintf("%.1f s", rb.Seconds)
		}
		row(fmt.Sprintf("scale %d -> %d at %.0f s: to the ring settled", rb.From, rb.To, rb.At), "%s", settled)
		synced := "not seen"
		if rb.CacheSyncedSeconds >= 0 {
			synced = fmt.Sprintf("%.1f s", rb.CacheSyncedSeconds)
		}
		row(fmt.Sprintf("scale %d -> %d: to every member serving its slots from a synced cache (the newcomer's list done)", rb.From, rb.To), "%s", synced)
		if rb.LargeDataLists >= 0 {
			row(fmt.Sprintf("scale %d -> %d: lists of LargeData the members sent during it (LIST, or a watch from every object; the API server's audit log)", rb.From, rb.To), "%d", rb.LargeDataLists)
		}
		row(fmt.Sprintf("scale %d -> %d: time to reconciled of spec changes sent during it", rb.From, rb.To), "%s", pct(rb.Latency))
		row(fmt.Sprintf("scale %d -> %d: writes to idle LargeData objects during it (caused by the rebalance)", rb.From, rb.To), "%d", rb.IdleWrites)
	}
	if t := r.Tracker; t.Present > 0 && t.Events > 0 {
		row("LargeData writes seen on the watch", "per created object 1 create + %.2f metadata; per generation (create or spec change) %.2f status",
			float64(t.MetadataWrites)/float64(t.Present), float64(t.StatusWrites)/float64(int64(t.Present)+t.SpecWrites))
	}
	row("writes to idle LargeData objects, whole run", "%d", r.IdleWrites)
	row("second writes of a generation just reconciled (echo of a duplicate reconcile), whole run", "%d", r.Tracker.EchoWrites)
	if len(r.APIServer) > 0 {
		row("API server requests/s (mean), by verb", "%s", rates(r.APIServer))
		row("of which LargeData", "%s", rates(r.LargeData))
		row("API server CPU (mean)", "%.2f cores", r.APIServerCPU)
	}
	if m := r.APIServerMemory; m != nil {
		row("API server memory at the last sample", "RSS %.0f MiB (peak %.0f MiB), heap in use %.0f MiB, with %d objects",
			m.RSSBytes/(1<<20), m.PeakRSSBytes/(1<<20), m.HeapBytes/(1<<20), m.Objects)
		row("etcd database size at the last sample", "%.0f MiB", m.StorageBytes/(1<<20))
	}
	if h := r.APIServerHeapProfile; h != nil {
		row("API server live heap after a forced GC, every object reconciled", "%.0f MiB, %.1f KB per LargeData (%d)",
			h.LiveBytes/(1<<20), h.BytesPerObject/1000, h.Objects)
	}
	if r.LoadAverage > 0 {
		row("machine load average (mean of the 1-minute figure)", "%.1f", r.LoadAverage)
	}
	if c := r.APIServerCPUProfile; c != nil && c.Creates > 0 {
		fmt.Fprintf(&b, "\nThe API server's CPU during the creates: a %.0f s profile (`%s`), %.1f s of CPU, %d LargeData created and %d patched meanwhile, **%.2f ms per created object**:\n\n",
			c.Seconds, c.File, c.CPUSeconds, c.Creates, c.Patches, c.MsPerCreate)
		b.WriteString("| phase | CPU (s) | ms per created object |\n| --- | --: | --: |\n")
		for _, ph := range c.Phases {
			fmt.Fprintf(&b, "| %s | %.2f | %.2f |\n", ph.Name, ph.CPUSeconds, ph.MsPerCreate)
		}
	}
	if len(r.Members) > 0 {
		b.WriteString("\n| member | slots | objects | RSS (MiB) | peak RSS (MiB) | heap in use (MiB) | mean CPU (cores) |\n| --- | --: | --: | --: | --: | --: | --: |\n")
		for _, m := range r.Members {
			fmt.Fprintf(&b, "| %s | %d | %d | %.1f | %.1f | %.1f | %.2f |\n", m.Name, m.Slots, m.Objects,
				m.RSSBytes/(1<<20), m.PeakRSSBytes/(1<<20), m.HeapBytes/(1<<20), m.MeanCPU)
		}
	}
	if len(r.Faults) > 0 {
		b.WriteString(faultsTable(r.Faults))
	}
	if j := r.Journal; j != nil {
		fmt.Fprintf(&b, "\nReconcile journals: %d reconciles of %d objects checked; **%d overlapping reconciles of one slot by two members**, besides %d excused (one side was in flight when its member froze and sent no request after SIGCONT: the documented limit of a lease); **%d objects never reconciled at their final generation**.\n",
			j.Entries, j.Objects, j.Overlaps-j.Excused, j.Excused, len(j.Missing))
		for _, d := range j.Details {
			fmt.Fprintf(&b, "- %s\n", d)
		}
		if len(j.Missing) > 0 {
			fmt.Fprintf(&b, "- missing (first %d): %s\n", min(len(j.Missing), 20), strings.Join(j.Missing[:min(len(j.Missing), 20)], ", "))
		}
	}
	fmt.Fprintf(&b, "\nCharts: [latency](%s), [objects per member](%s), [memory per member](%s), [CPU per member](%s). Every figure: [%s](%s).\n",
		FileLatency, FileObjects, FileMemory, FileCPU, FileJSON, FileJSON)
	return b.String()
}

func faultsTable(faults []Fault) string {
	var b strings.Builder
	b.WriteString("\n| fault | at (s) | member (slots) | served again (s) | objects created meanwhile: time to Ready | the one created at the fault: Ready after (s) | ring settled again (s) | also |\n")
	b.WriteString("| --- | --: | --- | --: | --- | --: | --: | --- |\n")
	for _, f := range faults {
		member := "-"
		if f.Member != "" {
			member = fmt.Sprintf("%s (%d)", f.Member, f.Slots)
			if f.Coordinator {
				member += ", the coordinator"
			}
		}
		seconds := func(v float64) string {
			switch {
			case v < 0:
				return "not reached"
			case v == 0:
				return "-"
			}
			return fmt.Sprintf("%.1f", v)
		}
		ready := pct(f.Ready)
		if f.NotReady > 0 {
			ready += fmt.Sprintf("; %d never Ready", f.NotReady)
		}
		var also []string
		switch f.Kind {
		case "stop":
			also = append(also, fmt.Sprintf("frozen %.1f s; exited %s s after SIGCONT; reconciles started while frozen: %d",
				f.Paused, seconds(f.ExitAfterResume), f.StartedWhilePaused))
		case "apiserver-restart":
			var lists []string
			for _, k := range slices.Sorted(maps.Keys(f.Lists)) {
				lists = append(lists, fmt.Sprintf("%s %d", k, f.Lists[k]))
			}
			also = append(also, fmt.Sprintf("down %.1f s; its LargeData watch cache initialized in %.1f s, %d LargeData requests refused (429) meanwhile; LISTs answered in the %.0f s after: %s (of LargeData, %d from the members, %d from the harness); LargeData watches open: %d; member restarts: %d",
				f.Down, f.CacheInit, f.Refused, f.Window, strings.Join(lists, ", "), f.MemberLists, f.HarnessLists, f.Watches, f.MemberRestarts))
		}
		if f.Error != "" {
			also = append(also, "error: "+strings.ReplaceAll(f.Error, "|", "/"))
		}
		fmt.Fprintf(&b, "| %s | %.0f | %s | %s | %s | %s | %s | %s |\n", f.Kind, f.At, member, seconds(f.ServedAgain),
			ready, seconds(f.FirstReady), seconds(f.Settled), strings.Join(also, "; "))
	}
	return b.String()
}

func lastError(r *workload.Result) string {
	if r.LastError == "" {
		return ""
	}
	return "; last: " + strings.ReplaceAll(r.LastError, "|", "/")
}

func rateText(r float64) string {
	if r == 0 {
		return "none"
	}
	return fmt.Sprintf("%g/s", r)
}

func pct(p Percentiles) string {
	if p.Count == 0 {
		return "none"
	}
	return fmt.Sprintf("p50 %.2f s, p90 %.2f s, p99 %.2f s, max %.2f s (%d)", p.P50, p.P90, p.P99, p.Max, p.Count)
}

func rates(m map[string]float64) string {
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(m)) {
		parts = append(parts, fmt.Sprintf("%s %.1f", k, m[k]))
	}
	return strings.Join(parts, ", ")
}
