// Package wirecount counts the objects an API server sends to a client: the
// items of a list and the ADDED events of a watch, decoded from a copy of the
// response body while the client reads the body itself. Tests and benchmarks
// use it in a rest.Config's transport wrapper to see what a member's cache
// really received, which no client-side figure shows.
package wirecount

import (
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"sync"
)

// Received makes resp's body report the objects it carries as the client
// reads it: received is called with their keys, "namespace/name" (a list's
// items at once, a watch's ADDED events one by one), from another goroutine.
// A relist sends objects again: count distinct keys to know which objects a
// client was sent at all. closed, if not
// nil, is called once when the client closes the body. watching says whether
// resp answers a watch request.
func Received(resp *http.Response, watching bool, received func(keys []string), closed func()) *http.Response {
	pr, pw := io.Pipe()
	body := resp.Body
	var once sync.Once
	resp.Body = &teeBody{Reader: io.TeeReader(body, pw), close: func() error {
		err := body.Close()
		once.Do(func() {
			_ = pw.Close()
			if closed != nil {
				closed()
			}
		})
		return err
	}}
	go count(watching, pr, received)
	return resp
}

func count(watching bool, r io.Reader, received func(keys []string)) {
	defer func() { _, _ = io.Copy(io.Discard, r) }() // never block the client's reads
	dec := json.NewDecoder(r)
	if watching {
		for {
			var ev struct {
				Type   string `json:"type"`
				Object object `json:"object"`
			}
			if dec.Decode(&ev) != nil {
				return
			}
			if ev.Type == "ADDED" {
				received([]string{ev.Object.key()})
			}
		}
	}
	var list struct {
		Items []object `json:"items"`
	}
	if dec.Decode(&list) == nil {
		keys := make([]string, len(list.Items))
		for i, o := range list.Items {
			keys[i] = o.key()
		}
		received(keys)
	}
}

// object is what is decoded of each object: its name.
type object struct {
	Metadata struct {
		Namespace string `json:"namespace"`
		Name      string `json:"name"`
	} `json:"metadata"`
}

func (o object) key() string { return o.Metadata.Namespace + "/" + o.Metadata.Name }

type teeBody struct {
	io.Reader
	close func() error
}

func (b *teeBody) Close() error { return b.close() }

// RoundTripperFunc is an http.RoundTripper made of a function, for the
// transport wrappers (rest.Config.Wrap) that observe a client's traffic.
type RoundTripperFunc func(*http.Request) (*http.Response, error)

// RoundTrip calls f.
func (f RoundTripperFunc) RoundTrip(req *http.Request) (*http.Response, error) { return f(req) }

// Resource names the resource of a namespaced API path, with its
// subresource: "leases", "shardrings/status"; a path it cannot read is
// returned as it is.
func Resource(path string) string {
	parts := strings.Split(strings.Trim(path, "/"), "/")
	for i, p := range parts {
		if p == "namespaces" && i+2 < len(parts) {
			rest := parts[i+2:]
			if len(rest) >= 3 {
				return rest[0] + "/" + rest[2]
			}
			return rest[0]
		}
	}
	return path
}
