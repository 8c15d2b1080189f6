package membership

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	clocktesting "k8s.io/utils/clock/testing"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"

	shardingv1alpha1 "github.com/kubeshard/kubeshard/api/sharding/v1alpha1"
	"github.com/kubeshard/kubeshard/internal/testenv"
)

const (
	testNamespace = "operators"
	testRing      = "widgets"
	testMember    = "widgets-operator-1"
)

// start has no sub-microsecond part, so renewTime survives the MicroTime
// round trip through the fake API server unchanged.
var start = time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)

var errAPIDown = apierrors.NewServiceUnavailable("etcdserver: request timed out")

// apiServer is a fake API server whose outages and conflicts a test switches
// on and off, and which counts the requests it sees.
type apiServer struct {
	client.Client
	down      atomic.Bool  // every request fails
	conflicts atomic.Int32 // the next n updates fail with a conflict
	gets      atomic.Int32
	updates   atomic.Int32
}

func newAPIServer(objs ...client.Object) *apiServer {
	s := &apiServer{}
	s.Client = fake.NewClientBuilder().WithObjects(objs...).WithInterceptorFuncs(interceptor.Funcs{
		Get: func(ctx context.Context, c client.WithWatch, key client.ObjectKey, obj client.Object, opts ...client.GetOption) error {
			s.gets.Add(1)
			if s.down.Load() {
				return errAPIDown
			}
			return c.Get(ctx, key, obj, opts...)
		},
		Create: func(ctx context.Context, c client.WithWatch, obj client.Object, opts ...client.CreateOption) error {
			if s.down.Load() {
				return errAPIDown
			}
			return c.Create(ctx, obj, opts...)
		},
		Update: func(ctx context.Context, c client.WithWatch, obj client.Object, opts ...client.UpdateOption) error {
			s.updates.Add(1)
			if s.down.Load() {
				return errAPIDown
			}
			if s.conflicts.Load() > 0 {
				s.conflicts.Add(-1)
				return apierrors.NewConflict(schema.GroupResource{Group: "coordination.k8s.io", Resource: "leases"},
					obj.GetName(), errors.New("the object has been modified"))
			}
			return c.Update(ctx, obj, opts...)
		},
	}).Build()
	return s
}

func (s *apiServer) lease(t *testing.T) *coordinationv1.Lease {
	t.Helper()
	lease := &coordinationv1.Lease{}
	key := client.ObjectKey{Namespace: testNamespace, Name: LeaseName(testRing, testMember)}
	if err := s.Get(t.Context(), key, lease); err != nil {
		t.Fatalf("reading the member Lease: %v", err)
	}
	return lease
}

type testMemberEnv struct {
	m       *Member
	api     *apiServer
	clock   *clocktesting.FakeClock
	fenceds *atomic.Int32 // calls of OnFenced
}

func newTestMember(t *testing.T, api *apiServer) testMemberEnv {
	t.Helper()
	return newTestMemberWith(t, api, nil)
}

// newTestMemberWith is newTestMember with options changed by opts.
func newTestMemberWith(t *testing.T, api *apiServer, opts func(*Options)) testMemberEnv {
	t.Helper()
	env := testMemberEnv{api: api, clock: clocktesting.NewFakeClock(start), fenceds: &atomic.Int32{}}
	o := Options{
		Ring:      testRing,
		Namespace: testNamespace,
		Name:      testMember,
		Clock:     env.clock,
		OnFenced:  func() { env.fenceds.Add(1) },
	}
	if opts != nil {
		opts(&o)
	}
	m, err := NewMember(api, o)
	if err != nil {
		t.Fatalf("NewMember: %v", err)
	}
	env.m = m
	return env
}

// at reads a Lease timestamp; zero when it is unset.
func at(t *metav1.MicroTime) time.Time {
	if t == nil {
		return time.Time{}
	}
	return t.Time
}

func holder(lease *coordinationv1.Lease) string {
	if lease.Spec.HolderIdentity == nil {
		return ""
	}
	return *lease.Spec.HolderIdentity
}

func TestNewMemberRejectsOptionsThatCannotWork(t *testing.T) {
	valid := Options{Ring: testRing, Namespace: testNamespace, Name: testMember}
	tests := []struct {
		name    string
		change  func(*Options)
		mention string
	}{
		{"no ring", func(o *Options) { o.Ring = "" }, "Ring is required"},
		{"no namespace", func(o *Options) { o.Namespace = "" }, "Namespace is required"},
		{"no name", func(o *Options) { o.Name = "" }, "Name is required"},
		{"name not a label value", func(o *Options) { o.Name = "op/1" }, "Name"},
		{"renew deadline as long as the lease", func(o *Options) { o.RenewDeadline = DefaultLeaseDuration }, "LeaseDuration"},
		{"retry period as long as the deadline", func(o *Options) { o.RetryPeriod = DefaultRenewDeadline }, "RetryPeriod"},
		{"negative retry period", func(o *Options) { o.RetryPeriod = -time.Second }, "RetryPeriod"},
		{"negative slots", func(o *Options) { o.Slots = -1 }, "Slots"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			opts := valid
			tt.change(&opts)
			_, err := NewMember(newAPIServer(), opts)
			if !errors.Is(err, ErrInvalidOptions) || !strings.Contains(err.Error(), tt.mention) {
				t.Fatalf("NewMember() error = %v, want ErrInvalidOptions mentioning %q", err, tt.mention)
			}
		})
	}
	if _, err := NewMember(newAPIServer(), valid); err != nil {
		t.Fatalf("NewMember with only the required fields: %v", err)
	}
}

func TestFirstRenewalCreatesTheLease(t *testing.T) {
	env := newTestMember(t, newAPIServer())
	if env.m.Valid() {
		t.Fatal("Valid() before the Lease was acquired")
	}

	if err := env.m.renewOnce(t.Context()); err != nil {
		t.Fatalf("renewOnce: %v", err)
	}

	lease := env.api.lease(t)
	if got := lease.Labels[shardingv1alpha1.LabelRing]; got != testRing {
		t.Errorf("ring label = %q, want %q", got, testRing)
	}
	if got := lease.Labels[LabelMember]; got != testMember {
		t.Errorf("member label = %q, want %q", got, testMember)
	}
	if got, ok := lease.Annotations[shardingv1alpha1.AnnotationServing]; !ok || got != "" {
		t.Errorf("serving annotation = %q (present %v), want present and empty", got, ok)
	}
	if holder(lease) != testMember {
		t.Errorf("holderIdentity = %q, want %q", holder(lease), testMember)
	}
	if got := ptr.Deref(lease.Spec.LeaseDurationSeconds, 0); got != 15 {
		t.Errorf("leaseDurationSeconds = %d, want 15", got)
	}
	if !at(lease.Spec.RenewTime).Equal(start) {
		t.Errorf("renewTime = %v, want %v", lease.Spec.RenewTime, start)
	}
	if !at(lease.Spec.AcquireTime).Equal(start) {
		t.Errorf("acquireTime = %v, want %v", lease.Spec.AcquireTime, start)
	}
	if got := ptr.Deref(lease.Spec.LeaseTransitions, -1); got != 0 {
		t.Errorf("leaseTransitions = %d, want 0", got)
	}
	if !env.m.Valid() || !env.m.LastRenewal().Equal(start) {
		t.Errorf("Valid() = %v, LastRenewal() = %v; want true, %v", env.m.Valid(), env.m.LastRenewal(), start)
	}
}

func TestRenewalWritesRenewTimeAndServing(t *testing.T) {
	env := newTestMember(t, newAPIServer())
	if err := env.m.renewOnce(t.Context()); err != nil {
		t.Fatalf("first renewal: %v", err)
	}

	env.m.SetServing([]int{10, 3, 1, 2, 3}, 7)
	env.clock.Step(DefaultRetryPeriod)
	if err := env.m.renewOnce(t.Context()); err != nil {
		t.Fatalf("second renewal: %v", err)
	}

	lease := env.api.lease(t)
	now := start.Add(DefaultRetryPeriod)
	if !at(lease.Spec.RenewTime).Equal(now) {
		t.Errorf("renewTime = %v, want %v", lease.Spec.RenewTime, now)
	}
	if !at(lease.Spec.AcquireTime).Equal(start) || ptr.Deref(lease.Spec.LeaseTransitions, -1) != 0 {
		t.Errorf("acquireTime %v, leaseTransitions %d changed by a renewal", lease.Spec.AcquireTime, ptr.Deref(lease.Spec.LeaseTransitions, -1))
	}
	if got := lease.Annotations[shardingv1alpha1.AnnotationServing]; got != "1-3,10" {
		t.Errorf("serving annotation = %q, want %q", got, "1-3,10")
	}
	if got := lease.Annotations[shardingv1alpha1.AnnotationEpoch]; got != "7" {
		t.Errorf("epoch annotation = %q, want %q: the coordinator needs the epoch the serving list was decided at", got, "7")
	}
	if !env.m.LastRenewal().Equal(now) {
		t.Errorf("LastRenewal() = %v, want %v", env.m.LastRenewal(), now)
	}
}

func TestPublishServingWritesAtOnceThroughAConflict(t *testing.T) {
	env := newTestMember(t, newAPIServer())
	if err := env.m.renewOnce(t.Context()); err != nil {
		t.Fatalf("first renewal: %v", err)
	}

	env.m.SetServing([]int{0, 1, 2, 3, 40}, 1)
	env.api.conflicts.Store(1)
	if err := env.m.PublishServing(t.Context()); err != nil { // no clock step: no tick has happened
		t.Fatalf("PublishServing: %v", err)
	}
	if got := env.api.lease(t).Annotations[shardingv1alpha1.AnnotationServing]; got != "0-3,40" {
		t.Errorf("serving annotation = %q, want %q", got, "0-3,40")
	}

	env.m.SetServing([]int{5, 4096}, 1)
	err := env.m.PublishServing(t.Context())
	if err == nil || !strings.Contains(err.Error(), "4096") {
		t.Fatalf("PublishServing of slot 4096 in a 1024-slot ring: error = %v, want one naming the slot", err)
	}
	if got := env.api.lease(t).Annotations[shardingv1alpha1.AnnotationServing]; got != "0-3,40" {
		t.Errorf("serving annotation = %q after a rejected publish, want it unchanged", got)
	}
}

// An API outage longer than RenewDeadline fences the member for good: a member
// that may already have been declared dead must not resume when the API
// server comes back, or two members could serve one slot.
func TestOutageLongerThanRenewDeadlineFences(t *testing.T) {
	env := newTestMember(t, newAPIServer())
	if done, err := env.m.step(t.Context()); done || err != nil {
		t.Fatalf("first step: done %v, err %v", done, err)
	}
	env.m.SetServing([]int{7}, 1)

	env.api.down.Store(true)
	for elapsed := DefaultRetryPeriod; elapsed < DefaultRenewDeadline; elapsed += DefaultRetryPeriod {
		env.clock.Step(DefaultRetryPeriod)
		if done, err := env.m.step(t.Context()); done || err != nil {
			t.Fatalf("after %v of outage: done %v, err %v; want to keep trying", elapsed, done, err)
		}
		if !env.m.Valid() {
			t.Fatalf("after %v of outage (< renewDeadline): Valid() = false", elapsed)
		}
	}
	env.clock.Step(DefaultRetryPeriod)
	done, err := env.m.step(t.Context())
	if !done || !errors.Is(err, ErrFenced) {
		t.Fatalf("after renewDeadline of outage: done %v, err %v; want ErrFenced", done, err)
	}
	if !env.m.Fenced() || env.m.Valid() || env.fenceds.Load() != 1 {
		t.Fatalf("Fenced() %v, Valid() %v, OnFenced calls %d; want true, false, 1", env.m.Fenced(), env.m.Valid(), env.fenceds.Load())
	}

	// The API server recovers: the member stays fenced and writes nothing.
	env.api.down.Store(false)
	updates := env.api.updates.Load()
	env.clock.Step(DefaultRetryPeriod)
	if _, err := env.m.step(t.Context()); !errors.Is(err, ErrFenced) {
		t.Errorf("step after recovery: err %v, want ErrFenced", err)
	}
	if err := env.m.PublishServing(t.Context()); !errors.Is(err, ErrFenced) {
		t.Errorf("PublishServing after recovery: err %v, want ErrFenced", err)
	}
	if env.m.Valid() || env.fenceds.Load() != 1 || env.api.updates.Load() != updates {
		t.Errorf("after recovery: Valid() %v, OnFenced calls %d, updates %d; want false, 1, no new update",
			env.m.Valid(), env.fenceds.Load(), env.api.updates.Load()-updates)
	}
	if got := at(env.api.lease(t).Spec.RenewTime); !got.Equal(start) {
		t.Errorf("renewTime = %v, want the last renewal before the outage, %v", got, start)
	}
}

// Reconciles check Valid, so the member stops serving exactly at the deadline
// even if Run is stuck or asleep and has not fenced yet.
func TestValidTurnsFalseAtRenewDeadlineBeforeRunNotices(t *testing.T) {
	env := newTestMember(t, newAPIServer())
	if err := env.m.renewOnce(t.Context()); err != nil {
		t.Fatalf("renewOnce: %v", err)
	}
	env.clock.Step(DefaultRenewDeadline - time.Microsecond)
	if !env.m.Valid() {
		t.Fatal("Valid() = false just before renewDeadline")
	}
	env.clock.Step(time.Microsecond)
	if env.m.Valid() {
		t.Fatal("Valid() = true at renewDeadline without a renewal")
	}
	if env.m.Fenced() || env.fenceds.Load() != 0 {
		t.Fatal("Valid() fenced the member by itself: fencing is Run's job")
	}
}

// A member that cannot reach the API server at start-up has never served, so
// it keeps trying rather than crash-looping, and serves nothing meanwhile.
func TestUnreachableAPIAtStartupIsRetriedWithoutFencing(t *testing.T) {
	env := newTestMember(t, newAPIServer())
	env.api.down.Store(true)
	for range 3 * int(DefaultRenewDeadline/DefaultRetryPeriod) {
		if done, err := env.m.step(t.Context()); done || err != nil {
			t.Fatalf("step during start-up outage: done %v, err %v", done, err)
		}
		if env.m.Valid() {
			t.Fatal("Valid() without ever holding the Lease")
		}
		env.clock.Step(DefaultRetryPeriod)
	}
	env.api.down.Store(false)
	if done, err := env.m.step(t.Context()); done || err != nil || !env.m.Valid() {
		t.Fatalf("step after recovery: done %v, err %v, Valid() %v; want the Lease acquired", done, err, env.m.Valid())
	}
}

func TestReleaseHandsTheSlotsBackAndStopsRun(t *testing.T) {
	env := newTestMember(t, newAPIServer())
	runErr := make(chan error, 1)
	go func() { runErr <- env.m.Run(t.Context()) }()
	testenv.Eventually(t, 5*time.Second, "the member acquires its Lease", func() (bool, string) { return env.m.Valid(), "" })
	env.m.SetServing([]int{1, 2, 3}, 1)
	if err := env.m.PublishServing(t.Context()); err != nil {
		t.Fatalf("PublishServing: %v", err)
	}

	if err := env.m.Release(t.Context()); err != nil {
		t.Fatalf("Release: %v", err)
	}

	select {
	case err := <-runErr:
		if err != nil {
			t.Errorf("Run after Release: %v, want nil", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Run still running after Release")
	}
	lease := env.api.lease(t)
	if holder(lease) != "" || lease.Annotations[shardingv1alpha1.AnnotationServing] != "" {
		t.Errorf("after Release: holderIdentity %q, serving %q; want both empty",
			holder(lease), lease.Annotations[shardingv1alpha1.AnnotationServing])
	}
	if env.m.Valid() || len(env.m.Serving()) != 0 {
		t.Errorf("after Release: Valid() %v, Serving() %v; want false, none", env.m.Valid(), env.m.Serving())
	}
	if err := env.m.PublishServing(t.Context()); !errors.Is(err, ErrReleased) {
		t.Errorf("PublishServing after Release: %v, want ErrReleased", err)
	}
	if holder(env.api.lease(t)) != "" {
		t.Error("the Lease was taken back after Release")
	}

	// The coordinator sees the member gone at once, without waiting for expiry.
	tracker := NewTracker(TrackerOptions{Ring: testRing, Clock: env.clock})
	tracker.Observe(env.api.lease(t))
	if got := tracker.Members(); len(got) != 1 || got[0].Live || !got[0].Released || got[0].Name != testMember {
		t.Errorf("Tracker after Release: %+v, want %s released and not live", got, testMember)
	}
}

// A failed release leaves no one renewing the Lease, so it expires.
func TestFailedReleaseStillStopsRenewing(t *testing.T) {
	env := newTestMember(t, newAPIServer())
	if err := env.m.renewOnce(t.Context()); err != nil {
		t.Fatalf("renewOnce: %v", err)
	}
	env.api.down.Store(true)
	if err := env.m.Release(t.Context()); !errors.Is(err, errAPIDown) {
		t.Fatalf("Release during an outage: %v, want the API error", err)
	}
	env.api.down.Store(false)
	if done, err := env.m.step(t.Context()); !done || err != nil {
		t.Errorf("step after a failed Release: done %v, err %v; want Run to stop", done, err)
	}
	if got := at(env.api.lease(t).Spec.RenewTime); !got.Equal(start) || env.m.Valid() {
		t.Errorf("renewTime %v, Valid() %v; want no renewal and not valid", got, env.m.Valid())
	}
}

// A StatefulSet pod that restarts keeps its name, so the new process takes over
// the old Lease at once instead of waiting for it to expire; the new
// incarnation serves nothing yet, and says so.
func TestRestartedMemberTakesOverItsLease(t *testing.T) {
	old := &coordinationv1.Lease{
		ObjectMeta: metav1.ObjectMeta{
			Namespace:   testNamespace,
			Name:        LeaseName(testRing, testMember),
			Labels:      map[string]string{shardingv1alpha1.LabelRing: testRing, "team": "storage"},
			Annotations: map[string]string{shardingv1alpha1.AnnotationServing: "0-99"},
		},
		Spec: coordinationv1.LeaseSpec{
			HolderIdentity:       ptr.To(testMember),
			LeaseDurationSeconds: ptr.To[int32](15),
			AcquireTime:          ptr.To(metav1.NewMicroTime(start.Add(-time.Hour))),
			RenewTime:            ptr.To(metav1.NewMicroTime(start.Add(-time.Second))),
			LeaseTransitions:     ptr.To[int32](2),
		},
	}
	env := newTestMember(t, newAPIServer(old))

	if err := env.m.renewOnce(t.Context()); err != nil {
		t.Fatalf("renewOnce: %v", err)
	}

	lease := env.api.lease(t)
	if holder(lease) != testMember || !env.m.Valid() {
		t.Errorf("holderIdentity %q, Valid() %v; want %q, true", holder(lease), env.m.Valid(), testMember)
	}
	if got := lease.Annotations[shardingv1alpha1.AnnotationServing]; got != "" {
		t.Errorf("serving annotation = %q, want the new incarnation's empty list", got)
	}
	if !at(lease.Spec.AcquireTime).Equal(start) || ptr.Deref(lease.Spec.LeaseTransitions, -1) != 3 {
		t.Errorf("acquireTime %v, leaseTransitions %d; want %v, 3", lease.Spec.AcquireTime, ptr.Deref(lease.Spec.LeaseTransitions, -1), start)
	}
	if lease.Labels["team"] != "storage" || lease.Labels[LabelMember] != testMember {
		t.Errorf("labels = %v, want the old ones kept and the member label added", lease.Labels)
	}
}

// Run itself, with the fake clock: it acquires at once, renews on every tick,
// and returns ErrFenced once an outage reaches RenewDeadline.
func TestRunRenewsOnEveryTickAndFences(t *testing.T) {
	env := newTestMember(t, newAPIServer())
	runErr := make(chan error, 1)
	go func() { runErr <- env.m.Run(t.Context()) }()
	testenv.Eventually(t, 5*time.Second, "the member acquires its Lease", func() (bool, string) { return env.m.Valid(), "" })

	for i := range 2 {
		before := env.api.updates.Load()
		env.clock.Step(DefaultRetryPeriod)
		testenv.Eventually(t, 5*time.Second, "a renewal on the tick", func() (bool, string) { return env.api.updates.Load() > before, "" })
		want := start.Add(time.Duration(i+1) * DefaultRetryPeriod)
		testenv.Eventually(t, 5*time.Second, "LastRenewal advances to "+want.String(), func() (bool, string) {
			return env.m.LastRenewal().Equal(want), "LastRenewal " + env.m.LastRenewal().String()
		})
	}
	lastRenewal := env.m.LastRenewal()

	env.api.down.Store(true)
	for {
		before := env.api.gets.Load()
		env.clock.Step(DefaultRetryPeriod)
		// The clock does not move again until this step's outcome is known:
		// a renewal attempt, or the member fenced and Run returning.
		testenv.Eventually(t, 5*time.Second, "a renewal attempt or Run's return", func() (bool, string) {
			return env.api.gets.Load() > before || env.m.Fenced() || len(runErr) > 0, ""
		})
		if env.m.Fenced() || len(runErr) > 0 {
			break
		}
		if env.clock.Since(lastRenewal) > DefaultRenewDeadline {
			t.Fatalf("still running %v after the last renewal", env.clock.Since(lastRenewal))
		}
	}
	select {
	case err := <-runErr:
		if !errors.Is(err, ErrFenced) {
			t.Fatalf("Run returned %v, want ErrFenced", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the member is fenced but Run did not return")
	}
	if got := env.clock.Since(lastRenewal); got != DefaultRenewDeadline {
		t.Errorf("fenced %v after the last renewal, want renewDeadline %v", got, DefaultRenewDeadline)
	}
	if env.fenceds.Load() != 1 || env.m.Valid() {
		t.Errorf("OnFenced calls %d, Valid() %v; want 1, false", env.fenceds.Load(), env.m.Valid())
	}
}

// Cancelling Run (the manager stopping) keeps the Lease: releasing it is an
// explicit step of a graceful leave.
func TestRunReturnsNilOnCancelAndKeepsTheLease(t *testing.T) {
	env := newTestMember(t, newAPIServer())
	ctx, cancel := context.WithCancel(t.Context())
	runErr := make(chan error, 1)
	go func() { runErr <- env.m.Run(ctx) }()
	testenv.Eventually(t, 5*time.Second, "the member acquires its Lease", func() (bool, string) { return env.m.Valid(), "" })

	cancel()
	select {
	case err := <-runErr:
		if err != nil {
			t.Errorf("Run after cancel: %v, want nil", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Run still running after cancel")
	}
	if holder(env.api.lease(t)) != testMember {
		t.Error("cancelling Run released the Lease")
	}
	if err := env.m.Run(t.Context()); err == nil {
		t.Error("a second Run was accepted")
	}
}

// What the member found about shardSelector reaches its Lease, and a restarted
// member does not inherit its previous incarnation's finding.
func TestShardSelectorFindingIsPublishedAndNotInherited(t *testing.T) {
	api := newAPIServer()
	env := newTestMember(t, api)
	env.m.SetShardSelector(shardingv1alpha1.ShardSelectorIgnored)
	if err := env.m.renewOnce(t.Context()); err != nil {
		t.Fatalf("renewOnce: %v", err)
	}
	if got := api.lease(t).Annotations[shardingv1alpha1.AnnotationShardSelector]; got != shardingv1alpha1.ShardSelectorIgnored {
		t.Fatalf("annotation %q = %q, want %q", shardingv1alpha1.AnnotationShardSelector, got, shardingv1alpha1.ShardSelectorIgnored)
	}

	restarted := newTestMember(t, api)
	if err := restarted.m.renewOnce(t.Context()); err != nil {
		t.Fatalf("renewOnce after a restart: %v", err)
	}
	if got, ok := api.lease(t).Annotations[shardingv1alpha1.AnnotationShardSelector]; ok {
		t.Errorf("a restarted member kept its predecessor's finding %q", got)
	}
}

func TestTheSnapshotURLIsPublishedAndNotInherited(t *testing.T) {
	api := newAPIServer()
	const url = "https://10.0.0.7:8443/kubeshard/v1/snapshot"
	env := newTestMemberWith(t, api, func(o *Options) {
		o.Annotations = map[string]string{shardingv1alpha1.AnnotationSnapshotURL: url}
	})
	if err := env.m.renewOnce(t.Context()); err != nil {
		t.Fatalf("renewOnce: %v", err)
	}
	if got := api.lease(t).Annotations[shardingv1alpha1.AnnotationSnapshotURL]; got != url {
		t.Fatalf("annotation %q = %q, want %q", shardingv1alpha1.AnnotationSnapshotURL, got, url)
	}

	// Restarted without peer snapshots: nobody must ask it any more.
	restarted := newTestMember(t, api)
	if err := restarted.m.renewOnce(t.Context()); err != nil {
		t.Fatalf("renewOnce after a restart: %v", err)
	}
	if got, ok := api.lease(t).Annotations[shardingv1alpha1.AnnotationSnapshotURL]; ok {
		t.Errorf("a restarted member kept its predecessor's snapshot URL %q", got)
	}
}
