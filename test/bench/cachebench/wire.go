package main

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"sync"

	"github.com/kubeshard/kubeshard/internal/wirecount"
)

// call is one kind of API request: its verb (get, list, watch, create,
// update, patch, delete) and resource ("largedata", "shardrings/status").
type call struct {
	Verb, Resource string
}

// Named Lease requests are split off from the rest: they are the time-driven
// renewals (a member's own Lease, the manager's leader election), not work
// that objects cause.
const (
	resourceMemberLease = "leases (member renewals)"
	resourceLeaderLease = "leases (leader election)"
)

// wire counts what one member sends to the API server and, for LargeData,
// how many objects its initial lists bring back. It sits in the member's
// rest.Config, so every client of the member (cache, client, leader election,
// Lease renewals) goes through it.
type wire struct {
	leaderLease string // the leader election Lease's name

	mu    sync.Mutex
	calls map[call]int
	// listed counts LargeData objects received as initial lists: ADDED
	// events of watch-list streams (sendInitialEvents=true) and items of
	// LIST responses.
	listedStream, listedList int
	// unreadable counts initial-list responses that were not JSON, whose
	// objects could not be counted.
	unreadable int
}

func newWire(leaderLease string) *wire {
	return &wire{leaderLease: leaderLease, calls: map[call]int{}}
}

func (w *wire) wrap(rt http.RoundTripper) http.RoundTripper {
	return wirecount.RoundTripperFunc(func(req *http.Request) (*http.Response, error) {
		p := parsePath(req.URL.Path)
		q := req.URL.Query()
		watching := q.Get("watch") == "true" || q.Get("watch") == "1"
		verb := verbOf(req.Method, p.name != "", watching)
		resource := p.resource
		if p.sub != "" {
			resource += "/" + p.sub
		}
		if p.resource == "leases" && p.name == "" && verb == "create" {
			resource = "leases (create)"
		}
		if p.resource == "leases" && p.name != "" {
			resource = resourceMemberLease
			if p.name == w.leaderLease {
				resource = resourceLeaderLease
			}
		}
		w.mu.Lock()
		w.calls[call{verb, resource}]++
		w.mu.Unlock()

		resp, err := rt.RoundTrip(req)
		if err != nil || p.resource != "largedata" || p.name != "" || resp.StatusCode != http.StatusOK {
			return resp, err
		}
		switch verb {
		case "watch":
			if q.Get("sendInitialEvents") == "true" {
				w.countStream(resp)
			}
		case "list":
			w.countList(resp)
		}
		return resp, nil
	})
}

// countStream counts the ADDED events of a watch-list stream as the client
// reads them. The JSON watch encoding writes every event as
// {"type":"ADDED","object":...}, so counting that prefix in the bytes is
// exact and costs the client almost nothing; decoding the stream a second
// time would slow the member this benchmark times.
func (w *wire) countStream(resp *http.Response) {
	if !strings.Contains(resp.Header.Get("Content-Type"), "json") {
		w.mu.Lock()
		w.unreadable++
		w.mu.Unlock()
		return
	}
	resp.Body = &eventCounter{ReadCloser: resp.Body, add: func(n int) {
		w.mu.Lock()
		w.listedStream += n
		w.mu.Unlock()
	}}
}

// countList counts the items of a LIST response. It reads the page before
// the client does; pages are small (the reflector pages by 500) and LIST is
// only the fallback when the server refuses a watch-list.
func (w *wire) countList(resp *http.Response) {
	body, err := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	resp.Body = io.NopCloser(bytes.NewReader(body))
	var list struct {
		Items []json.RawMessage `json:"items"`
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if err != nil || json.Unmarshal(body, &list) != nil {
		w.unreadable++
		return
	}
	w.listedList += len(list.Items)
}

var addedPrefix = []byte(`{"type":"ADDED"`)

type eventCounter struct {
	io.ReadCloser
	add  func(int)
	tail []byte // the last len(addedPrefix)-1 bytes read, for a prefix split between reads
}

func (e *eventCounter) Read(p []byte) (int, error) {
	n, err := e.ReadCloser.Read(p)
	if n > 0 {
		got := p[:n]
		found := bytes.Count(got, addedPrefix)
		if len(e.tail) > 0 {
			// Only a prefix that straddles the boundary can be in here: the
			// tail and the head are each shorter than it.
			head := got[:min(len(got), len(addedPrefix)-1)]
			found += bytes.Count(append(e.tail, head...), addedPrefix)
		}
		if found > 0 {
			e.add(found)
		}
		keep := len(addedPrefix) - 1
		joined := append(e.tail, got[max(0, len(got)-keep):]...)
		e.tail = append(e.tail[:0:0], joined[max(0, len(joined)-keep):]...)
	}
	return n, err
}

type snapshot struct {
	calls                    map[call]int
	listedStream, listedList int
	unreadable               int
}

func (w *wire) snapshot() snapshot {
	w.mu.Lock()
	defer w.mu.Unlock()
	s := snapshot{calls: make(map[call]int, len(w.calls)), listedStream: w.listedStream, listedList: w.listedList, unreadable: w.unreadable}
	for k, v := range w.calls {
		s.calls[k] = v
	}
	return s
}

// sub returns what happened between before and s.
func (s snapshot) sub(before snapshot) snapshot {
	out := snapshot{
		calls:        map[call]int{},
		listedStream: s.listedStream - before.listedStream,
		listedList:   s.listedList - before.listedList,
		unreadable:   s.unreadable - before.unreadable,
	}
	for k, v := range s.calls {
		if d := v - before.calls[k]; d != 0 {
			out.calls[k] = d
		}
	}
	return out
}

// add sums snapshots of several members.
func (s snapshot) add(o snapshot) snapshot {
	out := snapshot{
		calls:        map[call]int{},
		listedStream: s.listedStream + o.listedStream,
		listedList:   s.listedList + o.listedList,
		unreadable:   s.unreadable + o.unreadable,
	}
	for k, v := range s.calls {
		out.calls[k] += v
	}
	for k, v := range o.calls {
		out.calls[k] += v
	}
	return out
}

func isLease(resource string) bool {
	return resource == resourceMemberLease || resource == resourceLeaderLease
}

// requests returns the number of requests that match keep.
func (s snapshot) requests(keep func(call) bool) int {
	n := 0
	for c, v := range s.calls {
		if keep(c) {
			n += v
		}
	}
	return n
}

// byResource sums the requests that match keep per resource.
func (s snapshot) byResource(keep func(call) bool) map[string]int {
	out := map[string]int{}
	for c, v := range s.calls {
		if keep(c) {
			out[c.Resource] += v
		}
	}
	return out
}

func isWrite(c call) bool {
	switch c.Verb {
	case "get", "list", "watch":
		return false
	}
	return true
}

func verbOf(method string, named, watching bool) string {
	switch {
	case method == http.MethodGet && watching:
		return "watch"
	case method == http.MethodGet && named:
		return "get"
	case method == http.MethodGet:
		return "list"
	case method == http.MethodPost:
		return "create"
	case method == http.MethodPut:
		return "update"
	}
	return strings.ToLower(method)
}

type apiPath struct {
	resource, name, sub string
}

// parsePath splits /api/v1/namespaces/ns/configmaps/name/status and
// /apis/group/version/resource/name into resource, name and subresource.
// Discovery paths come back as resource "discovery".
func parsePath(path string) apiPath {
	parts := strings.Split(strings.Trim(path, "/"), "/")
	switch {
	case len(parts) >= 2 && parts[0] == "api":
		parts = parts[2:]
	case len(parts) >= 3 && parts[0] == "apis":
		parts = parts[3:]
	default:
		return apiPath{resource: "discovery"}
	}
	if len(parts) >= 3 && parts[0] == "namespaces" {
		parts = parts[2:]
	}
	var p apiPath
	if len(parts) == 0 {
		return apiPath{resource: "discovery"}
	}
	p.resource = parts[0]
	if len(parts) > 1 {
		p.name = parts[1]
	}
	if len(parts) > 2 {
		p.sub = parts[2]
	}
	return p
}
