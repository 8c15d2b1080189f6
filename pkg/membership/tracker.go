package membership

import (
	"cmp"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	"k8s.io/utils/clock"

	shardingv1alpha1 "github.com/kubeshard/kubeshard/api/sharding/v1alpha1"
	"github.com/kubeshard/kubeshard/pkg/ring"
)

// TrackerOptions configure a Tracker. Ring is required; every other zero field
// takes the default documented on it.
type TrackerOptions struct {
	// Ring is the ShardRing whose member Leases are tracked; Leases whose
	// LabelRing has another value are ignored. Required: an empty Ring tracks
	// nothing.
	Ring string

	// Slots is the ring's number of slots, used to read serving annotations.
	// Default ring.DefaultSlots (1024).
	Slots int

	// LeaseDuration applies to Leases without spec.leaseDurationSeconds.
	// Default DefaultLeaseDuration (15 s).
	LeaseDuration time.Duration

	// Clock is the observer's own clock, the only one expiry is judged by.
	// Default clock.RealClock{}.
	Clock clock.PassiveClock
}

// withDefaults is the one place where zero fields get their defaults.
func (o TrackerOptions) withDefaults() TrackerOptions {
	if o.Slots <= 0 {
		o.Slots = ring.DefaultSlots
	}
	if o.LeaseDuration <= 0 {
		o.LeaseDuration = DefaultLeaseDuration
	}
	if o.Clock == nil {
		o.Clock = clock.RealClock{}
	}
	return o
}

// MemberInfo is what a Tracker knows about one member.
type MemberInfo struct {
	// Name is the member's name: the LabelMember label of its Lease, else its
	// holderIdentity, else (a released Lease without the label) the Lease name
	// without the "<ring>-" prefix.
	Name string

	// LeaseName is the name of the member's Lease.
	LeaseName string

	// Live means the member holds its Lease and the Tracker saw the Lease change
	// less than LeaseDuration ago. Only a live member may be assigned slots.
	Live bool

	// Released means the member left gracefully (empty holderIdentity): it has
	// stopped serving and its slots may be reassigned at once.
	Released bool

	// Expired means the member holds its Lease but the Tracker has not seen it
	// change for LeaseDuration. By then the member has fenced itself (its
	// RenewDeadline is shorter), so its slots may be reassigned at once.
	Expired bool

	// Serving is the slots the member last published, parsed from
	// AnnotationServing. It matters only while the member is Live: a member that
	// is Released or Expired serves nothing, whatever it last wrote.
	Serving []int

	// ServingUnknown means the serving annotation is missing or malformed, so
	// Serving is empty but proves nothing. The coordinator must read it as "may
	// still serve every slot it owned" and complete no handover away from a
	// live member until the annotation reads correctly again.
	ServingUnknown bool

	// Epoch is the newest ring status epoch the member had seen when it
	// published Serving (AnnotationEpoch). Missing or malformed reads as 0,
	// which acknowledges no move.
	Epoch int64

	// ShardSelector is what the member found the API server does with its
	// shardSelector, from AnnotationShardSelector: ShardSelectorApplied,
	// ShardSelectorIgnored, or "" when it has not said (selectorMode Labels,
	// or before its first slot group synced).
	ShardSelector string

	// LeaseDuration is the Lease's spec.leaseDurationSeconds, or the Tracker's
	// default when the Lease has none.
	LeaseDuration time.Duration

	// ObservedAt is when, by the Tracker's clock, it first saw the Lease as it
	// is now.
	ObservedAt time.Time
}

// Tracker judges which members of a ring are live from the Lease events its
// process sees. Every member keeps one, fed by a watch of the ring's Leases,
// so that the member elected coordinator starts with its own history instead
// of an empty one. It does no I/O and is safe for concurrent use.
//
// Like client-go leader election it never compares a Lease's renewTime with its
// own clock, since the two machines' clocks may disagree by any amount; it
// measures how long ago, by its own clock, it last saw the Lease change.
type Tracker struct {
	opts TrackerOptions

	mu     sync.Mutex
	leases map[string]*observed // by Lease name: a Tracker follows one namespace
	// anomalies are what is wrong with Leases labelled with the ring, by
	// Lease name.
	anomalies map[string]string
}

// observed is the last version of a Lease seen and when it was first seen.
type observed struct {
	info            MemberInfo
	resourceVersion string
	renewTime       time.Time
}

// NewTracker returns an empty Tracker.
func NewTracker(opts TrackerOptions) *Tracker {
	return &Tracker{opts: opts.withDefaults(), leases: map[string]*observed{}, anomalies: map[string]string{}}
}

// Observe records a Lease as its process sees it, on every event and on
// every resync. A Lease counts as changed, and the member as alive now, when its
// resourceVersion or its renewTime differs from the last one seen; a resync of
// the same version changes nothing.
//
// A Lease seen for the first time counts as changed now. A process that has
// just started therefore waits a full lease duration before it calls a silent
// member dead: it cannot know how long the member has been silent, and calling a
// member dead too early is what could let two members serve one slot.
//
// The coordinator also observes what it reads from the API server itself
// before it takes a member's slots: a watch can stall without an error, and
// the read shows whether the member wrote since the version the Tracker
// holds.
func (t *Tracker) Observe(lease *coordinationv1.Lease) {
	if lease == nil {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.opts.Ring == "" || lease.Labels[shardingv1alpha1.LabelRing] != t.opts.Ring {
		// Also drops a Lease whose label was changed away from this ring.
		delete(t.leases, lease.Name)
		delete(t.anomalies, lease.Name)
		return
	}

	o := &observed{resourceVersion: lease.ResourceVersion}
	if lease.Spec.RenewTime != nil {
		o.renewTime = lease.Spec.RenewTime.Time
	}
	observedAt := t.opts.Clock.Now()
	// Either difference counts: counting a change that was not a renewal only
	// delays an expiry, while missing a renewal could expire a live member.
	if old, ok := t.leases[lease.Name]; ok &&
		old.resourceVersion == o.resourceVersion && old.renewTime.Equal(o.renewTime) {
		observedAt = old.info.ObservedAt
	}

	holder := ""
	if lease.Spec.HolderIdentity != nil {
		holder = *lease.Spec.HolderIdentity
	}
	name := lease.Labels[LabelMember]
	if name == "" {
		name = holder
	}
	if name == "" {
		name = strings.TrimPrefix(lease.Name, t.opts.Ring+"-")
	}
	// A member renews exactly one Lease, named after the ring and itself. Any
	// other Lease with the ring's label (made by hand, or by something else
	// that chose the label) would make a member out of nothing, or give a real
	// member a second Lease whose renewals could keep it looking alive after
	// it died: it is ignored.
	if lease.Name != LeaseName(t.opts.Ring, name) {
		delete(t.leases, lease.Name)
		t.anomalies[lease.Name] = fmt.Sprintf("ignored: it names member %q, whose Lease would be %q", name, LeaseName(t.opts.Ring, name))
		return
	}
	// A member's own Lease held in another name was written by someone else;
	// the member writes its name back with its next renewal. It stays the
	// member's Lease: ignoring it would make a live member look gone.
	if holder != "" && holder != name {
		t.anomalies[lease.Name] = fmt.Sprintf("the Lease of member %q is held by %q", name, holder)
	} else {
		delete(t.anomalies, lease.Name)
	}
	leaseDuration := t.opts.LeaseDuration
	if d := lease.Spec.LeaseDurationSeconds; d != nil && *d > 0 {
		leaseDuration = time.Duration(*d) * time.Second
	}
	info := MemberInfo{
		Name:          name,
		LeaseName:     lease.Name,
		Released:      holder == "",
		LeaseDuration: leaseDuration,
		ObservedAt:    observedAt,
	}
	if text, ok := lease.Annotations[shardingv1alpha1.AnnotationServing]; !ok {
		info.ServingUnknown = true
	} else if slots, err := ring.ParseRanges(text, t.opts.Slots); err != nil {
		info.ServingUnknown = true
	} else {
		info.Serving = slots
	}
	if text := lease.Annotations[shardingv1alpha1.AnnotationEpoch]; text != "" {
		if epoch, err := strconv.ParseInt(text, 10, 64); err == nil && epoch > 0 {
			info.Epoch = epoch
		}
	}
	info.ShardSelector = lease.Annotations[shardingv1alpha1.AnnotationShardSelector]
	o.info = info
	t.leases[lease.Name] = o
}

// Anomalies returns what is wrong with Leases that carry the ring's label, by
// Lease name: Leases that are no member's own (ignored) and members' Leases
// held in another name. Someone wrote them who should not have.
func (t *Tracker) Anomalies() map[string]string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return maps.Clone(t.anomalies)
}

// Forget drops the Lease with this name, for a Lease that was deleted. A
// member whose Lease is gone is not live.
func (t *Tracker) Forget(leaseName string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	delete(t.leases, leaseName)
	delete(t.anomalies, leaseName)
}

// Members returns every tracked member, sorted by name, judged live or expired
// by the Tracker's clock now.
func (t *Tracker) Members() []MemberInfo {
	t.mu.Lock()
	defer t.mu.Unlock()
	members := make([]MemberInfo, 0, len(t.leases))
	for _, o := range t.leases {
		info := o.info
		info.Serving = slices.Clone(info.Serving)
		if !info.Released {
			info.Live = t.opts.Clock.Since(info.ObservedAt) < info.LeaseDuration
			info.Expired = !info.Live
		}
		members = append(members, info)
	}
	slices.SortFunc(members, func(a, b MemberInfo) int {
		return cmp.Or(cmp.Compare(a.Name, b.Name), cmp.Compare(a.LeaseName, b.LeaseName))
	})
	return members
}

// NextExpiry returns the earliest time at which a member that is live now will
// expire if its Lease does not change again, so that the coordinator can
// requeue then. It returns false when no member is live.
func (t *Tracker) NextExpiry() (time.Time, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	var next time.Time
	found := false
	for _, o := range t.leases {
		if o.info.Released || t.opts.Clock.Since(o.info.ObservedAt) >= o.info.LeaseDuration {
			continue
		}
		expiry := o.info.ObservedAt.Add(o.info.LeaseDuration)
		if !found || expiry.Before(next) {
			next, found = expiry, true
		}
	}
	return next, found
}
