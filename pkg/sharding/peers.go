package sharding

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strconv"
	"sync/atomic"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	utiljson "k8s.io/apimachinery/pkg/util/json"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/transport"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	shardingv1alpha1 "github.com/kubeshard/kubeshard/api/sharding/v1alpha1"
	"github.com/kubeshard/kubeshard/pkg/assignment"
	"github.com/kubeshard/kubeshard/pkg/membership"
	"github.com/kubeshard/kubeshard/pkg/ring"
	"github.com/kubeshard/kubeshard/pkg/shardcache"
)

// SnapshotPath is where a member serves the objects its cache holds to the
// members that gain its slots (Options.PeerAddress), on its metrics server:
// GET SnapshotPath?group=&version=&kind=&slots=<ranges>. With the metrics
// server's authentication and authorization (the operator's default), a
// caller needs get on this non-resource URL.
const SnapshotPath = "/kubeshard/v1/snapshot"

// DefaultPeerSnapshotTimeout bounds a member's wait for the snapshots of the
// slots it warms; then it lists them from the API server.
const DefaultPeerSnapshotTimeout = 2 * time.Minute

// snapshotter is what the snapshot handler serves from: the sharded cache.
type snapshotter interface {
	Snapshot(gvk schema.GroupVersionKind, slots []int) (*shardcache.Snapshot, error)
}

// snapshotHandler serves SnapshotPath from the cache it is given once the
// manager has made it.
type snapshotHandler struct {
	slots int
	cache atomic.Pointer[snapshotter]
}

func (h *snapshotHandler) set(s snapshotter) { h.cache.Store(&s) }

func (h *snapshotHandler) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	if req.Method != http.MethodGet {
		w.Header().Set("Allow", http.MethodGet)
		http.Error(w, "only GET", http.StatusMethodNotAllowed)
		return
	}
	c := h.cache.Load()
	if c == nil {
		http.Error(w, "the cache has not started", http.StatusServiceUnavailable)
		return
	}
	q := req.URL.Query()
	gvk := schema.GroupVersionKind{Group: q.Get("group"), Version: q.Get("version"), Kind: q.Get("kind")}
	slots, err := ring.ParseRanges(q.Get("slots"), h.slots)
	if err != nil || len(slots) == 0 || gvk.Version == "" || gvk.Kind == "" {
		http.Error(w, fmt.Sprintf("want group, version, kind and slots (ranges such as 0-17,40): %v", err), http.StatusBadRequest)
		return
	}
	snap, err := (*c).Snapshot(gvk, slots)
	switch {
	case errors.Is(err, shardcache.ErrNotHeld):
		http.Error(w, err.Error(), http.StatusConflict)
		return
	case err != nil:
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	if err := writeSnapshot(w, snap); err != nil {
		// The status is sent; the client sees a truncated body.
		return
	}
}

// The wire format: {"versions":{"<slot>":"<resourceVersion>",...},"items":[<object>,...]},
// the items as the cache holds them, written one at a time.
func writeSnapshot(w io.Writer, snap *shardcache.Snapshot) error {
	versions := make(map[string]string, len(snap.Versions))
	for s, v := range snap.Versions {
		versions[strconv.Itoa(s)] = strconv.FormatUint(v, 10)
	}
	head, err := json.Marshal(versions)
	if err != nil {
		return err
	}
	if _, err := fmt.Fprintf(w, `{"versions":%s,"items":[`, head); err != nil {
		return err
	}
	for i, obj := range snap.Items {
		data, err := json.Marshal(obj)
		if err != nil {
			return err
		}
		if i > 0 {
			data = append([]byte{','}, data...)
		}
		if _, err := w.Write(data); err != nil {
			return err
		}
	}
	_, err = io.WriteString(w, "]}")
	return err
}

// readSnapshot reads the wire format. Items become objects of gvk of the
// scheme's type where it has one, which is the form a typed informer keeps,
// and unstructured objects otherwise: decoded straight into the type, a
// snapshot of 200,000 objects never holds them all as maps of maps, which
// take several times the memory.
func readSnapshot(r io.Reader, scheme *runtime.Scheme, gvk schema.GroupVersionKind, slots int) (*shardcache.Snapshot, error) {
	dec := json.NewDecoder(r)
	expect := func(want json.Delim) error {
		tok, err := dec.Token()
		if err != nil {
			return err
		}
		if d, ok := tok.(json.Delim); !ok || d != want {
			return fmt.Errorf("want %q, got %v", want, tok)
		}
		return nil
	}
	if err := expect('{'); err != nil {
		return nil, err
	}
	snap := &shardcache.Snapshot{Versions: map[int]uint64{}}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, err
		}
		switch tok {
		case "versions":
			var versions map[string]string
			if err := dec.Decode(&versions); err != nil {
				return nil, fmt.Errorf("versions: %w", err)
			}
			for k, v := range versions {
				s, err := strconv.Atoi(k)
				if err != nil || s < 0 || s >= slots {
					return nil, fmt.Errorf("versions: %q is not a slot", k)
				}
				if snap.Versions[s], err = strconv.ParseUint(v, 10, 64); err != nil {
					return nil, fmt.Errorf("versions: slot %d: %w", s, err)
				}
			}
		case "items":
			if err := expect('['); err != nil {
				return nil, fmt.Errorf("items: %w", err)
			}
			for dec.More() {
				var raw json.RawMessage
				if err := dec.Decode(&raw); err != nil {
					return nil, fmt.Errorf("items: %w", err)
				}
				obj, err := decodeItem(raw, scheme, gvk)
				if err != nil {
					return nil, fmt.Errorf("items: %w", err)
				}
				snap.Items = append(snap.Items, obj)
			}
			if err := expect(']'); err != nil {
				return nil, fmt.Errorf("items: %w", err)
			}
		default:
			return nil, fmt.Errorf("unexpected field %v", tok)
		}
	}
	if err := expect('}'); err != nil {
		return nil, err
	}
	return snap, nil
}

// decodeItem decodes one object of gvk, into the scheme's type for it if
// there is one. Field names are matched case-sensitively and whole numbers
// stay int64, as in the API's own decoding.
func decodeItem(raw []byte, scheme *runtime.Scheme, gvk schema.GroupVersionKind) (runtime.Object, error) {
	if scheme != nil && scheme.Recognizes(gvk) {
		obj, err := scheme.New(gvk)
		if err != nil {
			return nil, err
		}
		if err := utiljson.Unmarshal(raw, obj); err != nil {
			return nil, err
		}
		obj.GetObjectKind().SetGroupVersionKind(gvk)
		return obj, nil
	}
	u := &unstructured.Unstructured{}
	if err := utiljson.Unmarshal(raw, &u.Object); err != nil {
		return nil, err
	}
	u.SetGroupVersionKind(gvk)
	return u, nil
}

// peerSource is the sharded cache's SnapshotSource: it asks the members that
// serve the slots now, found in the ShardRing's assignment, at the URL their
// Leases publish (AnnotationSnapshotURL).
type peerSource struct {
	key     client.ObjectKey // the ShardRing
	self    string
	slots   int
	timeout time.Duration
	http    *http.Client
	// scheme types the objects received (readSnapshot); nil leaves them
	// unstructured.
	scheme *runtime.Scheme
	// reader reads the ShardRing and the members' Leases; set once the
	// manager exists.
	reader atomic.Pointer[client.Reader]
}

func (p *peerSource) Snapshot(ctx context.Context, gvk schema.GroupVersionKind, slots []int) (*shardcache.Snapshot, error) {
	rp := p.reader.Load()
	if rp == nil {
		return nil, errors.New("the member has not started")
	}
	reader := *rp
	ctx, cancel := context.WithTimeout(ctx, p.timeout)
	defer cancel()
	sr := &shardingv1alpha1.ShardRing{}
	if err := reader.Get(ctx, p.key, sr); err != nil {
		return nil, fmt.Errorf("reading the ShardRing: %w", err)
	}
	table, err := assignment.FromStatus(&sr.Status, p.slots)
	if err != nil {
		return nil, err
	}
	byOwner := map[string][]int{}
	for _, s := range slots {
		owner := table.Owner[s]
		if owner == "" || owner == p.self {
			return nil, fmt.Errorf("slot %d has no other member serving it", s)
		}
		byOwner[owner] = append(byOwner[owner], s)
	}
	// The members are asked at once: each encodes its share while this one
	// decodes another's.
	type answer struct {
		owner string
		owned []int
		snap  *shardcache.Snapshot
		err   error
	}
	answers := make(chan answer, len(byOwner))
	for owner, owned := range byOwner {
		go func() {
			snap, err := p.ask(ctx, reader, owner, gvk, owned)
			answers <- answer{owner: owner, owned: owned, snap: snap, err: err}
		}()
	}
	out := &shardcache.Snapshot{Versions: map[int]uint64{}}
	for range byOwner {
		a := <-answers // buffered: the others finish on their own once ctx is cancelled
		if a.err != nil {
			return nil, fmt.Errorf("member %s: %w", a.owner, a.err)
		}
		out.Items = append(out.Items, a.snap.Items...)
		for _, s := range a.owned {
			v, ok := a.snap.Versions[s]
			if !ok {
				return nil, fmt.Errorf("member %s sent no version for slot %d", a.owner, s)
			}
			out.Versions[s] = v
		}
	}
	return out, nil
}

// ask fetches the snapshot of slots from member.
func (p *peerSource) ask(ctx context.Context, reader client.Reader, member string, gvk schema.GroupVersionKind, slots []int) (*shardcache.Snapshot, error) {
	lease := &coordinationv1.Lease{}
	if err := reader.Get(ctx, client.ObjectKey{Namespace: p.key.Namespace, Name: membership.LeaseName(p.key.Name, member)}, lease); err != nil {
		return nil, fmt.Errorf("reading its Lease: %w", err)
	}
	base := lease.Annotations[shardingv1alpha1.AnnotationSnapshotURL]
	if base == "" {
		return nil, errors.New("its Lease publishes no snapshot URL")
	}
	u, err := url.Parse(base)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return nil, fmt.Errorf("its snapshot URL %q is not an http(s) URL", base)
	}
	if u.Scheme == "http" && !isLoopback(u.Hostname()) {
		return nil, fmt.Errorf("its snapshot URL %q is plain HTTP off loopback", base)
	}
	q := url.Values{}
	q.Set("group", gvk.Group)
	q.Set("version", gvk.Version)
	q.Set("kind", gvk.Kind)
	q.Set("slots", ring.FormatRanges(slices.Sorted(slices.Values(slots))))
	u.RawQuery = q.Encode()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return nil, err
	}
	resp, err := p.http.Do(req)
	if err != nil {
		return nil, err
	}
	defer func() { _ = resp.Body.Close() }()
	if resp.StatusCode != http.StatusOK {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return nil, fmt.Errorf("%s: %s", resp.Status, msg)
	}
	return readSnapshot(resp.Body, p.scheme, gvk, p.slots)
}

// peers is what Options.PeerAddress sets up: the handler the metrics server
// serves at SnapshotPath, the cache's SnapshotSource, and the URL the
// member's Lease publishes.
type peers struct {
	handler *snapshotHandler
	source  *peerSource
	url     string
}

// setupPeers checks Options.PeerAddress against the metrics server the
// manager will run and registers the snapshot handler on it; nil without
// PeerAddress.
func setupPeers(cfg *rest.Config, mgrOpts *ctrl.Options, opts Options, key client.ObjectKey, slots int) (*peers, error) {
	if opts.PeerAddress == "" {
		return nil, nil
	}
	host, _, err := net.SplitHostPort(opts.PeerAddress)
	if err != nil {
		return nil, fmt.Errorf("sharding: Options.PeerAddress %q is not host:port: %w", opts.PeerAddress, err)
	}
	m := &mgrOpts.Metrics
	scheme := "http"
	switch {
	case m.BindAddress == "0":
		return nil, errors.New("sharding: Options.PeerAddress needs the metrics server, which serves the snapshots; it is off (BindAddress \"0\")")
	case m.SecureServing && opts.PeerCAFile == "":
		return nil, errors.New("sharding: Options.PeerAddress over HTTPS needs Options.PeerCAFile, the CA that verifies the other members' metrics servers")
	case m.SecureServing:
		scheme = "https"
	case !isLoopback(host):
		return nil, fmt.Errorf("sharding: Options.PeerAddress %q would serve the cache's objects over plain HTTP to anyone who reaches it: serve metrics over HTTPS (ctrl.Options.Metrics.SecureServing), or use a loopback address", opts.PeerAddress)
	}
	if _, taken := m.ExtraHandlers[SnapshotPath]; taken {
		return nil, fmt.Errorf("sharding: ctrl.Options.Metrics.ExtraHandlers already has %s", SnapshotPath)
	}
	if opts.PeerTokenFile != "" {
		cfg = &rest.Config{BearerTokenFile: opts.PeerTokenFile}
	}
	hc, err := peerHTTPClient(cfg, opts.PeerCAFile)
	if err != nil {
		return nil, fmt.Errorf("sharding: %w", err)
	}
	p := &peers{
		handler: &snapshotHandler{slots: slots},
		source:  &peerSource{key: key, self: opts.Member, slots: slots, timeout: opts.PeerSnapshotTimeout, http: hc, scheme: mgrOpts.Scheme},
		url:     scheme + "://" + opts.PeerAddress + SnapshotPath,
	}
	if m.ExtraHandlers == nil {
		m.ExtraHandlers = map[string]http.Handler{}
	}
	m.ExtraHandlers[SnapshotPath] = p.handler
	return p, nil
}

// peerHTTPClient authenticates as the member does to the API server (its
// bearer token; a client certificate is not passed on) and verifies the
// other members' certificates with caFile, if given.
func peerHTTPClient(cfg *rest.Config, caFile string) (*http.Client, error) {
	tlsConfig := &tls.Config{MinVersion: tls.VersionTLS12}
	if caFile != "" {
		pem, err := os.ReadFile(caFile)
		if err != nil {
			return nil, fmt.Errorf("reading the peers' CA: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("the peers' CA file %s holds no PEM certificate", caFile)
		}
		tlsConfig.RootCAs = pool
	}
	var rt http.RoundTripper = &http.Transport{
		TLSClientConfig:     tlsConfig,
		Proxy:               nil,
		DialContext:         (&net.Dialer{Timeout: 10 * time.Second}).DialContext,
		TLSHandshakeTimeout: 10 * time.Second,
	}
	if cfg.BearerToken != "" || cfg.BearerTokenFile != "" {
		var err error
		if rt, err = transport.NewBearerAuthWithRefreshRoundTripper(cfg.BearerToken, cfg.BearerTokenFile, rt); err != nil {
			return nil, fmt.Errorf("reading the member's token: %w", err)
		}
	}
	return &http.Client{Transport: rt}, nil
}

func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
