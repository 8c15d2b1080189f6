package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestAuditedInitialListsCountsListsAndStreamedLists(t *testing.T) {
	t0 := time.Date(2026, 12, 7, 3, 0, 0, 0, time.UTC)
	line := func(stage, verb, uri, agent string, code int, at time.Duration) string {
		return fmt.Sprintf(`{"stage":%q,"verb":%q,"requestURI":%q,"userAgent":%q,"objectRef":{"resource":"largedata"},"responseStatus":{"code":%d},"requestReceivedTimestamp":%q}`,
			stage, verb, uri, agent, code, t0.Add(at).Format(time.RFC3339Nano))
	}
	const member, harness = "largedata-operator/v0.0.0 (linux/amd64)", "loadtest/v0.0.0"
	const stream = "/apis/data.kubeshard.dev/v1alpha1/largedata?labelSelector=x&resourceVersionMatch=NotOlderThan&sendInitialEvents=true&watch=true"
	const plainWatch = "/apis/data.kubeshard.dev/v1alpha1/largedata?labelSelector=x&resourceVersion=42&watch=true"
	log := strings.Join([]string{
		line("ResponseComplete", "list", "/apis/data.kubeshard.dev/v1alpha1/largedata?limit=500", member, 200, time.Second), // counted
		line("ResponseStarted", "watch", stream, member, 200, 2*time.Second),                                                // counted
		line("ResponseComplete", "watch", stream, member, 200, 2*time.Second),                                               // the same watch, ending
		line("ResponseStarted", "watch", plainWatch, member, 200, 3*time.Second),                                            // a watch from a version
		line("ResponseComplete", "list", "/apis/data.kubeshard.dev/v1alpha1/largedata", member, 429, 4*time.Second),         // refused
		line("ResponseComplete", "list", "/apis/data.kubeshard.dev/v1alpha1/largedata", harness, 200, 5*time.Second),        // someone else
		line("ResponseComplete", "list", "/apis/data.kubeshard.dev/v1alpha1/largedata", member, 200, time.Minute),           // after the window
		`not json`,
	}, "\n")
	path := filepath.Join(t.TempDir(), "audit.log")
	if err := os.WriteFile(path, []byte(log), 0o600); err != nil {
		t.Fatal(err)
	}
	members, others, err := auditedInitialLists(path, t0, t0.Add(30*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	if members != 2 || others != 1 {
		t.Errorf("members %d, others %d; want 2 (a list and a streamed list) and 1", members, others)
	}
	if members, _, _ := auditedLists(path, t0); members != 2 {
		t.Errorf("auditedLists: members %d, want the 2 answered lists", members)
	}
}
