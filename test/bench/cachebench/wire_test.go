package main

import (
	"io"
	"strings"
	"testing"
)

func TestEventCounterCountsAddedEventsAcrossReads(t *testing.T) {
	stream := strings.Repeat(`{"type":"ADDED","object":{"kind":"LargeData"}}`+"\n", 7) +
		`{"type":"BOOKMARK","object":{"metadata":{"annotations":{"k8s.io/initial-events-end":"true"}}}}` + "\n" +
		`{"type":"MODIFIED","object":{}}` + "\n"
	// Every read size splits the prefix somewhere.
	for size := 1; size <= len(addedPrefix)+3; size++ {
		got := 0
		r := &eventCounter{ReadCloser: io.NopCloser(readerOf(stream, size)), add: func(n int) { got += n }}
		b, err := io.ReadAll(r)
		if err != nil || string(b) != stream {
			t.Fatalf("reads of %d bytes: the client read %q, %v", size, b, err)
		}
		if got != 7 {
			t.Errorf("reads of %d bytes: counted %d ADDED events, want 7", size, got)
		}
	}
}

// readerOf returns a reader that returns at most size bytes per Read.
func readerOf(s string, size int) io.Reader {
	return &chunks{r: strings.NewReader(s), size: size}
}

type chunks struct {
	r    io.Reader
	size int
}

func (c *chunks) Read(p []byte) (int, error) { return c.r.Read(p[:min(len(p), c.size)]) }

func TestParsePath(t *testing.T) {
	for path, want := range map[string]apiPath{
		"/apis/data.kubeshard.dev/v1alpha1/largedata":                                           {resource: "largedata"},
		"/apis/data.kubeshard.dev/v1alpha1/namespaces/bench-0/largedata/ld-1":                   {resource: "largedata", name: "ld-1"},
		"/apis/sharding.kubeshard.dev/v1alpha1/namespaces/ks/shardrings/largedata/status":       {resource: "shardrings", name: "largedata", sub: "status"},
		"/apis/coordination.k8s.io/v1/namespaces/kubeshard-system/leases/largedata-coordinator": {resource: "leases", name: "largedata-coordinator"},
		"/api/v1/namespaces/bench-0":                                                            {resource: "namespaces", name: "bench-0"},
		"/api/v1/namespaces/bench-0/configmaps":                                                 {resource: "configmaps"},
		"/apis":                                                                                 {resource: "discovery"},
		"/apis/data.kubeshard.dev/v1alpha1":                                                     {resource: "discovery"},
	} {
		if got := parsePath(path); got != want {
			t.Errorf("parsePath(%q) = %+v, want %+v", path, got, want)
		}
	}
}
