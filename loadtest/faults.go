package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	datav1alpha1 "github.com/kubeshard/kubeshard/api/data/v1alpha1"
	shardingv1alpha1 "github.com/kubeshard/kubeshard/api/sharding/v1alpha1"
	"github.com/kubeshard/kubeshard/internal/journal"
	"github.com/kubeshard/kubeshard/internal/localenv"
	"github.com/kubeshard/kubeshard/loadtest/internal/report"
	"github.com/kubeshard/kubeshard/loadtest/internal/tracker"
	"github.com/kubeshard/kubeshard/loadtest/internal/workload"
	"github.com/kubeshard/kubeshard/pkg/membership"
	"github.com/kubeshard/kubeshard/pkg/ring"
)

// The kinds of fault --faults schedules.
const (
	faultKill      = "kill"              // SIGKILL of a member; the pod runner restarts it
	faultStop      = "stop"              // SIGSTOP of a member for twice the lease, then SIGCONT
	faultAPIServer = "apiserver-restart" // kube-apiserver stopped and started again
)

type faultStep struct {
	kind  string
	after time.Duration
}

// parseFaults parses a fault schedule: KIND@OFFSET[,KIND@OFFSET...].
func parseFaults(s string) ([]faultStep, error) {
	if s == "" {
		return nil, nil
	}
	var steps []faultStep
	for part := range strings.SplitSeq(s, ",") {
		kind, at, ok := strings.Cut(strings.TrimSpace(part), "@")
		after, err := time.ParseDuration(at)
		if !ok || err != nil || after < 0 {
			return nil, fmt.Errorf("fault schedule %q: want KIND@OFFSET[,KIND@OFFSET...] such as kill@30s,stop@3m", s)
		}
		switch kind {
		case faultKill, faultStop, faultAPIServer:
		default:
			return nil, fmt.Errorf("fault schedule %q: %q is not a fault; want %s, %s or %s", s, kind, faultKill, faultStop, faultAPIServer)
		}
		if len(steps) > 0 && after < steps[len(steps)-1].after {
			return nil, fmt.Errorf("fault schedule %q: offsets must not decrease", s)
		}
		steps = append(steps, faultStep{kind: kind, after: after})
	}
	return steps, nil
}

// faultEnv is what injecting faults needs of the local cluster.
type faultEnv interface {
	Signal(member string, sig syscall.Signal) error
	PID(member string) (int, bool)
	RestartAPIServer(ctx context.Context) error
	LogDir() string
	MemberMetrics(ctx context.Context, member string) ([]byte, error)
	AuditLog() string
}

// labelFault marks the objects created during a fault with its number.
const labelFault = "loadtest.kubeshard.dev/fault"

// faultCreateInterval is the pace of the objects created during a fault.
const faultCreateInterval = 500 * time.Millisecond

// faulter injects the faults of a run and measures the recovery from each
// from outside, as a user would: the ShardRing's status, the members'
// Leases, and objects created meanwhile turning Ready.
type faulter struct {
	env   faultEnv
	c     client.WithWatch
	ring  types.NamespacedName
	names workload.Names
	spec  workload.Spec
	// objects is how many objects each fault creates.
	objects int
	// since is seconds since the run's start.
	since func() float64
	// apiGet reads a path of the API server.
	apiGet func(context.Context, string) ([]byte, error)
	step   func(string, ...any)
	// window is how long after an API server restart its requests are
	// counted.
	window time.Duration

	n      int     // faults so far
	pauses []pause // the stopped members, for the journal check
}

// pause is a member frozen with SIGSTOP: from at until resumed (SIGCONT);
// exited is when its process was seen gone (zero if never).
type pause struct {
	member              string
	at, resumed, exited time.Time
}

// namespace holds the objects created during faults: one namespace, so
// that watching them for Ready costs a list of a few hundred objects.
func (f *faulter) namespace() string { return f.names.Prefix + "-faults" }

// run injects one fault and returns its figures.
func (f *faulter) run(ctx context.Context, kind string) report.Fault {
	f.n++
	if kind == faultAPIServer {
		return f.restartAPIServer(ctx)
	}
	return f.loseMember(ctx, kind)
}

func (f *faulter) readRing(ctx context.Context) (*shardingv1alpha1.ShardRing, error) {
	sr := &shardingv1alpha1.ShardRing{}
	if err := f.c.Get(ctx, f.ring, sr); err != nil {
		return nil, fmt.Errorf("reading the ShardRing: %w", err)
	}
	return sr, nil
}

// loseMember signals a member that is not the coordinator (SIGKILL, or
// SIGSTOP for twice the lease) and measures until its slots are served
// again, the objects created in them meanwhile are Ready and the ring has
// settled with every member again.
func (f *faulter) loseMember(ctx context.Context, kind string) report.Fault {
	rep := report.Fault{Kind: kind, ServedAgain: -1, Settled: -1, FirstReady: -1}
	sr, err := f.readRing(ctx)
	if err != nil {
		rep.Error = err.Error()
		return rep
	}
	lease := time.Duration(sr.Spec.LeaseDurationSeconds) * time.Second
	if lease == 0 {
		lease = 15 * time.Second
	}
	victim, slots, coordinator, err := f.pickVictim(sr)
	if err != nil {
		rep.Error = err.Error()
		return rep
	}
	rep.Member, rep.Slots, rep.Coordinator = victim, len(slots), coordinator
	members := len(sr.Status.Members)
	pid, _ := f.env.PID(victim)
	sig := syscall.SIGKILL
	if kind == faultStop {
		sig = syscall.SIGSTOP
	}

	at := time.Now()
	if err := f.env.Signal(victim, sig); err != nil {
		rep.Error = err.Error()
		return rep
	}
	rep.At = f.since()
	f.step("Fault %d: %s of %s (%d slots)", f.n, sig, victim, len(slots))
	created := f.createDuring(ctx, at, slots, int(sr.Spec.Slots))

	if d, err := f.waitServed(ctx, victim, slots, int(sr.Spec.Slots), at, 3*lease+30*time.Second); err == nil {
		rep.ServedAgain = d.Seconds()
		f.step("Fault %d: the slots of %s are served again after %.1f s", f.n, victim, rep.ServedAgain)
	} else {
		rep.Error = err.Error()
	}
	if kind == faultStop {
		select {
		case <-time.After(time.Until(at.Add(2 * lease))):
		case <-ctx.Done():
		}
		// SIGCONT also in a run that ends meanwhile: a frozen member could
		// not be stopped.
		err := f.env.Signal(victim, syscall.SIGCONT)
		p := pause{member: victim, at: at, resumed: time.Now()}
		rep.Paused = p.resumed.Sub(at).Seconds()
		if err != nil {
			rep.Error = errors.Join(errors.New(rep.Error), err).Error()
		}
		rep.ExitAfterResume = -1
		if exited, ok := waitExit(ctx, f.env, victim, pid, 60*time.Second); ok {
			p.exited = exited
			rep.ExitAfterResume = exited.Sub(p.resumed).Seconds()
		}
		f.pauses = append(f.pauses, p)
		f.step("Fault %d: SIGCONT to %s after %.1f s; it exited %.1f s later", f.n, victim, rep.Paused, rep.ExitAfterResume)
	}

	f.finish(ctx, &rep, created, at, at, members)
	f.step("Fault %d: %d objects created meanwhile, Ready after p50 %.1f s, max %.1f s; the ring settled with %d members %.1f s after the signal",
		f.n, rep.Created, rep.Ready.P50, rep.Ready.Max, members, rep.Settled)
	return rep
}

// pickVictim chooses a Ready member with slots that has never held the
// coordinator's Lease (its log says so), in order of names, a different
// one each fault where it can: losing the coordinator is its own scenario
// (the end-to-end tests'); this one measures losing a member at scale.
func (f *faulter) pickVictim(sr *shardingv1alpha1.ShardRing) (string, []int, bool, error) {
	var candidates []shardingv1alpha1.MemberStatus
	for _, m := range sr.Status.Members {
		if m.State == shardingv1alpha1.MemberReady && m.SlotCount > 0 {
			candidates = append(candidates, m)
		}
	}
	if len(candidates) < 2 {
		return "", nil, false, fmt.Errorf("%d Ready members with slots; a fault needs another to take over", len(candidates))
	}
	lock := []byte(f.ring.Namespace + "/" + f.ring.Name + "-coordinator")
	coordinator := func(name string) bool {
		log, err := os.ReadFile(filepath.Join(f.env.LogDir(), name+".log"))
		if err != nil {
			return false
		}
		for line := range bytes.Lines(log) {
			if bytes.Contains(line, []byte("Successfully acquired lease")) && bytes.Contains(line, lock) {
				return true
			}
		}
		return false
	}
	var plain []shardingv1alpha1.MemberStatus
	for _, m := range candidates {
		if !coordinator(m.Name) {
			plain = append(plain, m)
		}
	}
	pick, isCoordinator := candidates[0], true
	if len(plain) > 0 {
		pick, isCoordinator = plain[(f.n-1)%len(plain)], false
	}
	slots, err := ring.ParseRanges(pick.Slots, int(sr.Spec.Slots))
	if err != nil {
		return "", nil, false, fmt.Errorf("the slots of %s in the ShardRing's status: %w", pick.Name, err)
	}
	return pick.Name, slots, isCoordinator, nil
}

// waitServed waits until each of slots is served with a synced cache: its
// owner in the ShardRing's status lists it in the serving annotation of its
// Lease (a member publishes a slot there before it opens it, so the list
// covers every slot it may work on), and the owner's metric
// kubeshard_member_slots_served (set once the cache of every slot it gained
// has synced) counts every slot of that list. If the owner is the lost member
// itself, its Lease must have been acquired after the signal, by its next
// process.
func (f *faulter) waitServed(ctx context.Context, lost string, slots []int, total int, at time.Time, timeout time.Duration) (time.Duration, error) {
	deadline := at.Add(timeout)
	why := "not checked yet"
	for time.Now().Before(deadline) {
		ok, reason := f.served(ctx, lost, slots, total, at)
		if ok {
			return time.Since(at), nil
		}
		why = reason
		select {
		case <-time.After(200 * time.Millisecond):
		case <-ctx.Done():
			return 0, ctx.Err()
		}
	}
	return 0, fmt.Errorf("the slots of %s were not served again within %s: %s", lost, timeout, why)
}

func (f *faulter) served(ctx context.Context, lost string, slots []int, total int, at time.Time) (bool, string) {
	sr, err := f.readRing(ctx)
	if err != nil {
		return false, err.Error()
	}
	owner := make([]string, total)
	for _, m := range sr.Status.Members {
		owned, err := ring.ParseRanges(m.Slots, total)
		if err != nil {
			return false, err.Error()
		}
		for _, s := range owned {
			owner[s] = m.Name
		}
	}
	leases := &coordinationv1.LeaseList{}
	if err := f.c.List(ctx, leases, client.InNamespace(f.ring.Namespace), client.MatchingLabels{shardingv1alpha1.LabelRing: f.ring.Name}); err != nil {
		return false, err.Error()
	}
	serving := map[string][]int{}
	for _, l := range leases.Items {
		m := l.Labels[membership.LabelMember]
		if m == lost && (l.Spec.AcquireTime == nil || l.Spec.AcquireTime.Time.Before(at)) {
			continue // the lost process's Lease: what it served is not served
		}
		s, err := ring.ParseRanges(l.Annotations[shardingv1alpha1.AnnotationServing], total)
		if err != nil {
			return false, fmt.Sprintf("the Lease of %s: %v", m, err)
		}
		serving[m] = s
	}
	owners := map[string]bool{}
	for _, s := range slots {
		o := owner[s]
		if o == "" {
			return false, fmt.Sprintf("slot %d has no owner", s)
		}
		if _, ok := slices.BinarySearch(serving[o], s); !ok {
			return false, fmt.Sprintf("slot %d: its owner %s does not serve it yet", s, o)
		}
		owners[o] = true
	}
	for o := range owners {
		body, err := f.env.MemberMetrics(ctx, o)
		if err != nil {
			return false, fmt.Sprintf("the metrics of %s: %v", o, err)
		}
		synced, err := slotsSynced(body)
		if err != nil {
			return false, fmt.Sprintf("the metrics of %s: %v", o, err)
		}
		if synced < len(serving[o]) {
			return false, fmt.Sprintf("%s has synced the cache of %d of the %d slots it serves", o, synced, len(serving[o]))
		}
	}
	return true, ""
}

// finish waits for the objects the fault created (the first of them sent
// at createdFrom) to be Ready and for the ring to settle with members
// again, and records both in rep, the settling from the fault at at.
func (f *faulter) finish(ctx context.Context, rep *report.Fault, created *faultObjects, createdFrom, at time.Time, members int) {
	rep.Created, rep.Ready, rep.FirstReady, rep.NotReady = created.wait(ctx, createdFrom, 2*time.Minute)
	if err := localenv.WaitSettled(ctx, f.c, f.ring, members, 5*time.Minute); err == nil {
		rep.Settled = time.Since(at).Seconds()
	} else if rep.Error == "" {
		rep.Error = err.Error()
	}
}

// waitExit waits until member's process pid is gone (the pod runner then
// restarts it) and returns when it was first seen gone.
func waitExit(ctx context.Context, env faultEnv, member string, pid int, timeout time.Duration) (time.Time, bool) {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if now, ok := env.PID(member); !ok || now != pid {
			return time.Now(), true
		}
		select {
		case <-time.After(50 * time.Millisecond):
		case <-ctx.Done():
			return time.Time{}, false
		}
	}
	return time.Time{}, false
}

// restartAPIServer restarts kube-apiserver and measures the recovery: how
// long it was down, the lists the members sent to the new process in the
// window after (one per informer at most: no relist storm), that no member
// had to restart, and objects created after it turning Ready.
func (f *faulter) restartAPIServer(ctx context.Context) report.Fault {
	rep := report.Fault{Kind: faultAPIServer, Settled: -1, FirstReady: -1}
	sr, err := f.readRing(ctx)
	if err != nil {
		rep.Error = err.Error()
		return rep
	}
	members := len(sr.Status.Members)
	restartsBefore, err := f.memberRestarts(ctx)
	if err != nil {
		rep.Error = err.Error()
		return rep
	}
	at := time.Now()
	rep.At = f.since()
	f.step("Fault %d: restarting kube-apiserver", f.n)
	if err := f.env.RestartAPIServer(ctx); err != nil {
		rep.Error = err.Error()
		return rep
	}
	up := time.Now()
	rep.Down, rep.Window = up.Sub(at).Seconds(), f.window.Seconds()
	f.step("Fault %d: kube-apiserver is back after %.1f s", f.n, rep.Down)
	created := f.createDuring(ctx, up, nil, int(sr.Spec.Slots))
	select {
	case <-time.After(time.Until(up.Add(f.window))):
	case <-ctx.Done():
	}
	if body, err := f.apiGet(ctx, "/metrics"); err != nil {
		rep.Error = err.Error()
	} else if a, err := readAPIServerFigures(body); err != nil {
		rep.Error = err.Error()
	} else {
		rep.Lists, rep.Refused, rep.Watches, rep.CacheInit = a.lists, a.refused, a.watches, a.cacheInit
	}
	if rep.MemberLists, rep.HarnessLists, err = auditedLists(f.env.AuditLog(), at); err != nil {
		rep.Error = err.Error()
	}
	restartsAfter, err := f.memberRestarts(ctx)
	if err != nil {
		rep.Error = err.Error()
	}
	rep.MemberRestarts = restartsAfter - restartsBefore
	f.finish(ctx, &rep, created, up, at, members)
	f.step("Fault %d: LISTs in the %s after: %v; LargeData watches: %d; member restarts: %d; objects created after it Ready after p50 %.1f s, max %.1f s",
		f.n, f.window, rep.Lists, rep.Watches, rep.MemberRestarts, rep.Ready.P50, rep.Ready.Max)
	return rep
}

// memberRestarts sums the restart counts of the members' pods.
func (f *faulter) memberRestarts(ctx context.Context) (int, error) {
	pods := &corev1.PodList{}
	if err := f.c.List(ctx, pods, client.InNamespace(f.ring.Namespace)); err != nil {
		return 0, fmt.Errorf("listing the members' pods: %w", err)
	}
	var n int
	for _, p := range pods.Items {
		for _, cs := range p.Status.ContainerStatuses {
			n += int(cs.RestartCount)
		}
	}
	return n, nil
}

// auditedLists counts the lists of LargeData answered (2xx) since the API
// server's audit log says were sent by the members (their user agent is
// the operator binary's) and by anyone else (the harness).
func auditedLists(path string, since time.Time) (members, others int, err error) {
	return auditedRequests(path, since, time.Time{}, func(verb, uri string) bool { return verb == "list" })
}

// auditedInitialLists counts, as auditedLists, the lists of LargeData
// received between from and to, and the watches that began with every
// object (sendInitialEvents=true, client-go's streaming list).
func auditedInitialLists(path string, from, to time.Time) (members, others int, err error) {
	return auditedRequests(path, from, to, func(verb, uri string) bool {
		return verb == "list" || (verb == "watch" && strings.Contains(uri, "sendInitialEvents=true"))
	})
}

// auditedRequests counts the requests of LargeData received in [from, to)
// (to zero: no end) that match and were answered 2xx, or for a watch began,
// by the members and by anyone else.
func auditedRequests(path string, from, to time.Time, match func(verb, uri string) bool) (members, others int, err error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return 0, 0, fmt.Errorf("reading the API server's audit log: %w", err)
	}
	for line := range bytes.Lines(data) {
		var ev struct {
			Stage      string `json:"stage"`
			Verb       string `json:"verb"`
			RequestURI string `json:"requestURI"`
			UserAgent  string `json:"userAgent"`
			ObjectRef  struct {
				Resource string `json:"resource"`
			} `json:"objectRef"`
			ResponseStatus struct {
				Code int `json:"code"`
			} `json:"responseStatus"`
			Received time.Time `json:"requestReceivedTimestamp"`
		}
		if json.Unmarshal(line, &ev) != nil || ev.ObjectRef.Resource != "largedata" || !match(ev.Verb, ev.RequestURI) ||
			ev.ResponseStatus.Code >= 300 || ev.Received.Before(from) || (!to.IsZero() && !ev.Received.Before(to)) {
			continue
		}
		// A list is recorded once it is answered; a watch when it begins
		// (and again when it ends).
		if want := map[bool]string{true: "ResponseStarted", false: "ResponseComplete"}[ev.Verb == "watch"]; ev.Stage != want {
			continue
		}
		if strings.HasPrefix(ev.UserAgent, "largedata-operator/") {
			members++
		} else {
			others++
		}
	}
	return members, others, nil
}

// apiServerFigures are what the API server's metrics say about the time
// since it started.
type apiServerFigures struct {
	// lists counts the LIST requests answered (2xx) per resource.
	lists map[string]int
	// refused counts requests of LargeData answered 429 (while its watch
	// cache initialized).
	refused int
	// watches is the number of LargeData watches open.
	watches int
	// cacheInit is how long LargeData's watch cache took to initialize.
	cacheInit float64
}

func readAPIServerFigures(body []byte) (apiServerFigures, error) {
	fams, err := parseMetrics(body)
	if err != nil {
		return apiServerFigures{}, err
	}
	a := apiServerFigures{lists: map[string]int{}}
	if fam := fams["apiserver_request_total"]; fam != nil {
		for _, m := range fam.Metric {
			n := int(m.GetCounter().GetValue())
			code, resource := labelOf(m, "code"), labelOf(m, "resource")
			switch {
			case resource == "largedata" && code == "429":
				a.refused += n
			case labelOf(m, "verb") == "LIST" && strings.HasPrefix(code, "2"):
				a.lists[resource] += n
			}
		}
	}
	if fam := fams["apiserver_longrunning_requests"]; fam != nil {
		for _, m := range fam.Metric {
			if labelOf(m, "verb") == "WATCH" && labelOf(m, "resource") == "largedata" {
				a.watches += int(m.GetGauge().GetValue())
			}
		}
	}
	if fam := fams["apiserver_watch_cache_initialization_duration_seconds"]; fam != nil {
		for _, m := range fam.Metric {
			if labelOf(m, "resource") == "largedata" {
				a.cacheInit += m.GetHistogram().GetSampleSum()
			}
		}
	}
	return a, nil
}

// faultObjects are the objects a fault creates, and when each was created
// and seen Ready.
type faultObjects struct {
	f    *faulter
	done chan struct{}

	mu      sync.Mutex
	created map[string]time.Time
	ready   map[string]time.Time
	first   string
	errs    int
}

// createDuring creates f.objects objects, one every faultCreateInterval
// from now, in slots (nil: any slot), and follows them until they are
// Ready.
func (f *faulter) createDuring(ctx context.Context, at time.Time, slots []int, total int) *faultObjects {
	o := &faultObjects{f: f, done: make(chan struct{}), created: map[string]time.Time{}, ready: map[string]time.Time{}}
	ns := f.namespace()
	go func() {
		defer close(o.done)
		nsObj := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns, Labels: map[string]string{workload.LabelRun: f.names.Prefix}}}
		if err := f.c.Create(ctx, nsObj); err != nil && !apierrors.IsAlreadyExists(err) {
			o.mu.Lock()
			o.errs++
			o.mu.Unlock()
			return
		}
		tick := time.NewTicker(faultCreateInterval)
		defer tick.Stop()
		seq := 0
		for i := range f.objects {
			var name string
			for {
				name = fmt.Sprintf("fault%d-%05d", f.n, seq)
				seq++
				if _, ok := slices.BinarySearch(slots, ring.Slot(ns, name, total)); slots == nil || ok {
					break
				}
			}
			ld := &datav1alpha1.LargeData{
				ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: map[string]string{
					workload.LabelRun: f.names.Prefix, labelFault: fmt.Sprint(f.n),
				}},
				Spec: datav1alpha1.LargeDataSpec{Items: f.spec.Items, BatchSize: f.spec.BatchSize, Seed: int64(seq)},
			}
			sent := time.Now()
			err := f.c.Create(ctx, ld)
			o.mu.Lock()
			if err == nil {
				o.created[name] = sent
				if i == 0 {
					o.first = name
				}
			} else {
				o.errs++
			}
			o.mu.Unlock()
			select {
			case <-tick.C:
			case <-ctx.Done():
				return
			}
		}
	}()
	go o.follow(ctx)
	return o
}

// follow watches the fault's objects and records when each was first
// seen Ready, until all are or the run ends. A watch, not a poll: the
// harness's own lists would blur the count of the members' lists after an
// API server restart. A watch that ends is opened again; its first events
// are the objects as they are then, so nothing Ready is missed.
func (o *faultObjects) follow(ctx context.Context) {
	check := time.NewTicker(200 * time.Millisecond)
	defer check.Stop()
	for ctx.Err() == nil {
		w, err := o.f.c.Watch(ctx, &datav1alpha1.LargeDataList{}, client.InNamespace(o.f.namespace()),
			client.MatchingLabels{labelFault: fmt.Sprint(o.f.n)})
		if err != nil {
			select {
			case <-time.After(200 * time.Millisecond):
			case <-ctx.Done():
			}
			continue
		}
		for open := true; open; {
			select {
			case ev, ok := <-w.ResultChan():
				if !ok {
					open = false
					break
				}
				if ld, isLD := ev.Object.(*datav1alpha1.LargeData); isLD && tracker.Ready(ld) {
					o.mu.Lock()
					if _, seen := o.ready[ld.Name]; !seen {
						o.ready[ld.Name] = time.Now()
					}
					o.mu.Unlock()
				}
			case <-check.C:
				o.mu.Lock()
				finished := isDone(o.done) && len(o.ready) >= len(o.created)
				o.mu.Unlock()
				if finished {
					w.Stop()
					return
				}
			case <-ctx.Done():
				w.Stop()
				return
			}
		}
	}
}

// wait waits until every object created is Ready, at most timeout after
// the creates ended, and returns how many were created, their time from
// create to Ready, the first one's time from at to Ready (-1 if never) and
// how many never became Ready.
func (o *faultObjects) wait(ctx context.Context, at time.Time, timeout time.Duration) (int, report.Percentiles, float64, int) {
	select {
	case <-o.done:
	case <-ctx.Done():
	}
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) && ctx.Err() == nil {
		o.mu.Lock()
		all := len(o.ready) >= len(o.created)
		o.mu.Unlock()
		if all {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	var lat []float64
	for name, sent := range o.created {
		if r, ok := o.ready[name]; ok {
			lat = append(lat, r.Sub(sent).Seconds())
		}
	}
	first := -1.0
	if r, ok := o.ready[o.first]; ok && o.first != "" {
		first = r.Sub(at).Seconds()
	}
	return len(o.created), report.PercentilesOf(lat), first, len(o.created) - len(lat)
}

func isDone(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

// checkJournals reads the members' reconcile journals in dir and checks
// them against the final generation of every LargeData of the run: no two
// members reconciled objects of one slot at once, and every object was
// reconciled at its final generation. An overlap in which one reconcile
// was in flight when its member was frozen and sent no request after
// SIGCONT is excused: its context had ended (the member had lost its
// Lease), so it could not act (ARCHITECTURE.md, "Fencing").
//
// It also fills in StartedWhilePaused of the stop faults.
func (f *faulter) checkJournals(ctx context.Context, dir string, faults []report.Fault) (*report.Journal, error) {
	paths, err := filepath.Glob(filepath.Join(dir, "*.jsonl"))
	if err != nil {
		return nil, fmt.Errorf("finding the journals: %w", err)
	}
	if len(paths) == 0 {
		return nil, fmt.Errorf("no journals in %s", dir)
	}
	entries, err := journal.Read(paths...)
	if err != nil {
		return nil, err
	}
	want := map[string]int64{}
	err = workload.ListMetadata(ctx, f.c, f.names.Prefix, "", func(items []metav1.PartialObjectMetadata) error {
		for _, m := range items {
			want[m.Namespace+"/"+m.Name] = m.Generation
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("listing the run's LargeData: %w", err)
	}
	k := 0
	for i := range faults {
		if faults[i].Kind == faultStop && k < len(f.pauses) {
			faults[i].StartedWhilePaused = startedWhilePaused(entries, f.pauses[k])
			k++
		}
	}
	check := journal.Check(entries, want)
	j := &report.Journal{Entries: check.Entries, Objects: len(want), Overlaps: len(check.Overlaps), Missing: check.Missing, Members: map[string]int{}}
	for m, c := range check.Members {
		j.Members[m] = c.Total()
	}
	for _, o := range check.Overlaps {
		why := f.excuse(o)
		if why != "" {
			j.Excused++
		}
		if len(j.Details) < 20 {
			j.Details = append(j.Details, strings.TrimSpace(o.String()+" "+why))
		}
	}
	return j, nil
}

// excuse says why an overlap is the documented limitation of a frozen
// process, or "" if it is not.
func (f *faulter) excuse(o journal.Overlap) string {
	for _, e := range []journal.Entry{o.First, o.Second} {
		for _, p := range f.pauses {
			if e.Member == p.member && e.Start.Before(p.at) && e.End.After(p.at) && e.LastRequest.Before(p.resumed) {
				return "(excused: in flight when " + p.member + " froze; no request after SIGCONT)"
			}
		}
	}
	return ""
}

// startedWhilePaused counts the reconciles a frozen member started between
// its SIGSTOP and its exit after SIGCONT: none may start once its Lease
// has lapsed.
func startedWhilePaused(entries []journal.Entry, p pause) int {
	end := p.exited
	if end.IsZero() {
		end = time.Now()
	}
	var n int
	for _, e := range entries {
		if e.Member == p.member && !e.Start.Before(p.at) && e.Start.Before(end) {
			n++
		}
	}
	return n
}

func parseMetrics(body []byte) (map[string]*dto.MetricFamily, error) {
	p := expfmt.NewTextParser(model.UTF8Validation)
	return p.TextToMetricFamilies(bytes.NewReader(body))
}

func labelOf(m *dto.Metric, name string) string {
	for _, l := range m.Label {
		if l.GetName() == name {
			return l.GetValue()
		}
	}
	return ""
}
