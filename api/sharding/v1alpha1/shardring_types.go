package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// SelectorMode says how a member's watches select the objects of its slots.
// +kubebuilder:validation:Enum=Labels;ShardSelector
type SelectorMode string

const (
	// SelectorModeLabels selects by the slot label (any Kubernetes version).
	SelectorModeLabels SelectorMode = "Labels"
	// SelectorModeShardSelector selects the sharded kinds by hash ranges of
	// metadata.uid with the server-side shardSelector of KEP-5866 (Kubernetes
	// 1.36 and later, feature gate ShardedListAndWatch); no label is written
	// on them. Children still carry the slot label, taken from their owner.
	SelectorModeShardSelector SelectorMode = "ShardSelector"
)

// GroupResource names a Kubernetes resource by API group and plural resource
// name, like "data.kubeshard.dev"/"largedata" or ""/"configmaps".
type GroupResource struct {
	// Group is the API group; empty for the core group.
	// +optional
	// +kubebuilder:validation:MaxLength=253
	Group string `json:"group,omitempty"`

	// Resource is the plural, lower-case resource name.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=63
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`
	Resource string `json:"resource"`
}

// ShardedResource is a resource whose objects are split between the members,
// together with the resources of the children those objects own. A child
// (whose controller ownerReference points to a sharded object) lives on its
// owner's slot.
type ShardedResource struct {
	GroupResource `json:",inline"`

	// Children are the resources of objects that the sharded objects own.
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=16
	Children []GroupResource `json:"children,omitempty"`
}

// ShardRingSpec describes one sharded operator.
type ShardRingSpec struct {
	// Slots is the number of fixed slots that objects are hashed into. It
	// bounds how many members can share the work and cannot change for the
	// lifetime of the ring, because every object's slot derives from it.
	// +optional
	// +default=1024
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=16384
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="slots is immutable: every object's slot label derives from it; create a new ring to change it"
	Slots int32 `json:"slots,omitempty"`

	// LoadFactor bounds the consistent-hashing placement: no member's
	// preferred share exceeds LoadFactor times the mean. A decimal above 1.
	// +optional
	// +default="1.25"
	// +kubebuilder:validation:MaxLength=8
	// +kubebuilder:validation:XValidation:rule="self.matches('^[0-9]+([.][0-9]+)?$') && double(self) > 1.0 && double(self) <= 10.0",message="loadFactor must be a decimal greater than 1 and at most 10, such as \"1.25\""
	LoadFactor string `json:"loadFactor,omitempty"`

	// LeaseDurationSeconds is how long a member's Lease stays valid without a
	// renewal. A member that cannot renew for two thirds of it stops serving
	// (fences itself); the coordinator reassigns its slots once it expires.
	// +optional
	// +default=15
	// +kubebuilder:validation:Minimum=3
	// +kubebuilder:validation:Maximum=300
	LeaseDurationSeconds int32 `json:"leaseDurationSeconds,omitempty"`

	// Resources are the sharded resources and their children.
	// +required
	// +listType=atomic
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=32
	// +kubebuilder:validation:XValidation:rule="self.all(x, self.exists_one(y, y.group == x.group && y.resource == x.resource))",message="each resource may be listed only once"
	Resources []ShardedResource `json:"resources"`

	// SelectorMode says how members select the objects of their slots:
	// Labels (any Kubernetes version; slot = xxhash of namespace/name, kept in
	// the slot label) or ShardSelector (slot = the range of the FNV-1a hash of
	// metadata.uid, selected by the API server; needs the ShardedListAndWatch
	// feature gate, and falls back to filtering in the member without it).
	// +optional
	// +default="Labels"
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="selectorMode is immutable: it decides every object's slot"
	SelectorMode SelectorMode `json:"selectorMode,omitempty"`
}

// MemberState is a member's state as the coordinator sees it.
// +kubebuilder:validation:Enum=Ready;Joining;Leaving;Expired
type MemberState string

const (
	// MemberReady: the Lease is held and renewed, and the member serves all
	// the slots assigned to it.
	MemberReady MemberState = "Ready"
	// MemberJoining: the Lease is held but slots are still moving to it.
	MemberJoining MemberState = "Joining"
	// MemberLeaving: the member released its Lease or is handing slots away.
	MemberLeaving MemberState = "Leaving"
	// MemberExpired: the Lease was not renewed within its duration.
	MemberExpired MemberState = "Expired"
)

// MemberStatus is one member as the coordinator last saw it.
type MemberStatus struct {
	// Name is the member's identity (its pod name).
	Name string `json:"name"`
	// State is the member's state.
	State MemberState `json:"state"`
	// Slots are the slots the member owns, as a range list like "0-17,40-63".
	// +optional
	Slots string `json:"slots,omitempty"`
	// SlotCount is the number of slots the member owns.
	// +optional
	SlotCount int32 `json:"slotCount,omitempty"`
}

// SlotMove is a pending handover of slots from one member to another. The
// slots stay with From until From has acknowledged the move (published an
// epoch at least Epoch) and no longer serves them; then they go to To.
type SlotMove struct {
	// Slots are the moving slots, as a range list.
	Slots string `json:"slots"`
	// Epoch is the status epoch that started the move. From's acknowledgement
	// must be at least this recent: an older "serving" list may predate a
	// gain of the slot that From has not published yet.
	Epoch int64 `json:"epoch"`
	// From is the member handing the slots over; empty when they had no
	// live owner.
	// +optional
	From string `json:"from,omitempty"`
	// To is the member receiving the slots.
	To string `json:"to"`
}

// Condition types of a ShardRing.
const (
	// ConditionReady: every slot is served by a live member and nothing moves.
	ConditionReady = "Ready"
	// ConditionRebalancing: slots are moving between members.
	ConditionRebalancing = "Rebalancing"
	// ConditionDegraded: some slot has no live owner.
	ConditionDegraded = "Degraded"
	// ConditionServerSideSharding, in selectorMode ShardSelector only: the
	// API server applies the members' shardSelector. False means at least one
	// member found it ignored (feature gate off, or an older server) and
	// filters its watches itself: correct, but every member then receives
	// every object of the sharded kinds.
	ConditionServerSideSharding = "ServerSideSharding"
)

// ShardRingStatus is the assignment of slots to members, written only by the
// coordinator. A member serves a slot only while the newest status it has
// seen names it the owner and no move of that slot is pending.
type ShardRingStatus struct {
	// ObservedGeneration is the spec generation the status was computed from.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`

	// Epoch increases on every change of the assignment.
	// +optional
	Epoch int64 `json:"epoch,omitempty"`

	// Members are the live and recently seen members, sorted by name.
	// +optional
	// +listType=map
	// +listMapKey=name
	Members []MemberStatus `json:"members,omitempty"`

	// Moves are the pending handovers.
	// +optional
	// +listType=atomic
	Moves []SlotMove `json:"moves,omitempty"`

	// MemberCount is the number of members with a live Lease.
	// +optional
	MemberCount int32 `json:"memberCount,omitempty"`
	// ReadyMembers is the number of members in state Ready.
	// +optional
	ReadyMembers int32 `json:"readyMembers,omitempty"`
	// MovingSlots is the number of slots in pending moves.
	// +optional
	MovingSlots int32 `json:"movingSlots,omitempty"`
	// UnownedSlots is the number of slots with no live owner.
	// +optional
	UnownedSlots int32 `json:"unownedSlots,omitempty"`

	// Conditions: Ready, Rebalancing, Degraded and, in selectorMode
	// ShardSelector, ServerSideSharding.
	// +optional
	// +listType=map
	// +listMapKey=type
	Conditions []metav1.Condition `json:"conditions,omitempty"`
}

// ShardRing describes one sharded operator and records which member serves
// which slot.
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:shortName=ring
// +kubebuilder:printcolumn:name="Members",type=integer,JSONPath=`.status.memberCount`
// +kubebuilder:printcolumn:name="Ready",type=integer,JSONPath=`.status.readyMembers`
// +kubebuilder:printcolumn:name="Slots",type=integer,JSONPath=`.spec.slots`
// +kubebuilder:printcolumn:name="Moving",type=integer,JSONPath=`.status.movingSlots`
// +kubebuilder:printcolumn:name="Epoch",type=integer,JSONPath=`.status.epoch`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type ShardRing struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec   ShardRingSpec   `json:"spec"`
	Status ShardRingStatus `json:"status,omitempty"`
}

// ShardRingList is a list of ShardRings.
// +kubebuilder:object:root=true
type ShardRingList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []ShardRing `json:"items"`
}
