package v1alpha1

const (
	// LabelSlot holds the slot of a sharded object (and of its children), as a
	// decimal number in [0, spec.slots). It is written once, at creation, and
	// never changes: an object's slot is a function of its namespace and name.
	// Members watch their slots through a server-side selector on this label.
	LabelSlot = "sharding.kubeshard.dev/slot"

	// LabelRing names the ShardRing that a member Lease belongs to.
	LabelRing = "sharding.kubeshard.dev/ring"

	// AnnotationServing, on a member's Lease, lists the slots the member serves
	// right now as a compact range list such as "0-17,40-63". The coordinator
	// completes a handover only after the old owner has dropped the slot here.
	AnnotationServing = "sharding.kubeshard.dev/serving"

	// AnnotationEpoch, on a member's Lease, is the newest ShardRing status
	// epoch the member had seen when it published AnnotationServing. The
	// coordinator trusts a serving list only for moves that the member had
	// already seen.
	AnnotationEpoch = "sharding.kubeshard.dev/epoch"

	// AnnotationShardSelector, on a member's Lease in selectorMode
	// ShardSelector, says whether the API server applied the member's
	// shardSelector when it last listed a sharded kind: "Applied" or
	// "Ignored". The coordinator turns it into the ring's ServerSideSharding
	// condition.
	AnnotationShardSelector = "sharding.kubeshard.dev/shard-selector"

	// AnnotationWarm, on a member's Lease, lists the slots on their way to the
	// member (a pending move names it) whose objects its cache already holds,
	// as a compact range list. A member giving such a slot away keeps serving
	// it until the receiver lists it here (or a timeout passes), so that the
	// slot is never left without a member ready to reconcile it while the
	// receiver lists its objects.
	AnnotationWarm = "sharding.kubeshard.dev/warm"

	// AnnotationSnapshotURL, on a member's Lease, is the URL where the member
	// serves the objects its cache holds to the members that gain its slots,
	// so that they need not list them from the API server. Written only by
	// members that serve snapshots.
	AnnotationSnapshotURL = "sharding.kubeshard.dev/snapshot-url"
)

// Values of AnnotationShardSelector.
const (
	ShardSelectorApplied = "Applied"
	ShardSelectorIgnored = "Ignored"
)
