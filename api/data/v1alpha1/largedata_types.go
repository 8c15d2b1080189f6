package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Bounds of a LargeData spec. The API server enforces them; they are
// constants so that the operator and the load test agree with it.
const (
	// MaxItems bounds spec.items. The items live in the external store, so
	// the bound protects the store, not etcd.
	MaxItems = 100_000_000
	// MaxBatchSize bounds spec.batchSize so that one reconcile stays short:
	// a slot handover waits for in-flight reconciles to end.
	MaxBatchSize = 10_000
	// DefaultBatchSize is spec.batchSize when it is not set.
	DefaultBatchSize = 500
	// MaxStreamNameLength bounds spec.source.redisStream.stream.
	MaxStreamNameLength = 256
)

// Processing is the transformation applied to every item of a dataset.
// +kubebuilder:validation:Enum=Checksum;Uppercase;Reverse
type Processing string

const (
	// ProcessingChecksum stores the SHA-256 of each item's payload.
	ProcessingChecksum Processing = "Checksum"
	// ProcessingUppercase upper-cases each item's payload.
	ProcessingUppercase Processing = "Uppercase"
	// ProcessingReverse reverses each item's payload.
	ProcessingReverse Processing = "Reverse"
)

// LargeDataSpec is what the dataset should be.
type LargeDataSpec struct {
	// Items is the number of records in the dataset.
	// +required
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=100000000
	Items int64 `json:"items"`

	// Seed makes the records' content deterministic: the same seed and index
	// always give the same payload.
	// +optional
	Seed int64 `json:"seed,omitempty"`

	// BatchSize is how many records one reconcile processes before it
	// reports progress and requeues.
	// +optional
	// +default=500
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=10000
	BatchSize int32 `json:"batchSize,omitempty"`

	// Processing is the transformation applied to each record.
	// +optional
	// +default="Checksum"
	Processing Processing `json:"processing,omitempty"`

	// PublishSummary asks for a child ConfigMap, named after the object, that
	// summarises the processed dataset.
	// +optional
	PublishSummary bool `json:"publishSummary,omitempty"`

	// Source, when set, feeds the dataset from a stream: the member that
	// serves the object reads it through a consumer group of its own and
	// stores every entry as a record of the dataset, once, batchSize entries
	// a reconcile. The records of spec.items are kept apart from them.
	// +optional
	Source *DataSource `json:"source,omitempty"`
}

// DataSource is where a dataset's entries come from.
// +kubebuilder:validation:XValidation:rule="has(self.redisStream)",message="source needs redisStream"
type DataSource struct {
	// RedisStream is a Redis stream on the operator's Redis server (its
	// --stream-redis-address). An entry's field "payload" becomes the
	// record; an entry without it, or with one over 4 KiB, is counted as
	// malformed and skipped.
	// +optional
	RedisStream *RedisStreamSource `json:"redisStream,omitempty"`
}

// RedisStreamSource names a Redis stream.
type RedisStreamSource struct {
	// Stream is the stream's key. Default: <namespace>.<name>.data.
	// +optional
	// +kubebuilder:validation:MaxLength=256
	Stream string `json:"stream,omitempty"`
}

// Phase is a coarse summary of a LargeData's progress.
// +kubebuilder:validation:Enum=Pending;Initializing;Processing;Ready;Failed;Deleting
type Phase string

// Phases of a LargeData.
const (
	PhasePending      Phase = "Pending"
	PhaseInitializing Phase = "Initializing"
	PhaseProcessing   Phase = "Processing"
	PhaseReady        Phase = "Ready"
	PhaseFailed       Phase = "Failed"
	PhaseDeleting     Phase = "Deleting"
)

// Condition types of a LargeData.
const (
	// ConditionReady: every record of this generation is processed. Its reason
	// says how far the generation got otherwise: Initializing, Processing,
	// Deleting, or why it can never succeed.
	ConditionReady = "Ready"
	// ConditionDegraded: the store is unreachable or records failed. Present
	// only on objects that have been degraded; False once they recovered.
	ConditionDegraded = "Degraded"
)

// LargeDataStatus is the small, bounded progress record kept in etcd.
type LargeDataStatus struct {
	// Phase summarises progress.
	// +optional
	Phase Phase `json:"phase,omitempty"`
	// TotalItems is the number of records of the observed generation.
	// +optional
	TotalItems int64 `json:"totalItems,omitempty"`
	// ProcessedCount is the number of records processed.
	// +optional
	ProcessedCount int64 `json:"processedCount,omitempty"`
	// FailedItems is the number of records whose processing failed.
	// +optional
	FailedItems int64 `json:"failedItems,omitempty"`
	// CompletionRatio is ProcessedCount/TotalItems as a decimal string
	// ("0.425"), kept as a string because CRDs discourage floats.
	// +optional
	CompletionRatio string `json:"completionRatio,omitempty"`
	// LastProcessed is when the last batch was processed.
	// +optional
	LastProcessed *metav1.Time `json:"lastProcessed,omitempty"`
	// ObservedGeneration is the generation the status describes.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`
	// Conditions: Ready, and Degraded on objects that have been degraded.
	// +optional
	// +listType=map
	// +listMapKey=type
	Conditions []metav1.Condition `json:"conditions,omitempty"`
	// Stream is what the dataset ingested from spec.source.
	// +optional
	Stream *StreamStatus `json:"stream,omitempty"`
}

// StreamStatus is what a dataset ingested from its stream, as of UpdatedAt:
// the operator writes it at most every few seconds while entries arrive, so
// that a busy stream does not become a stream of writes to the API server.
type StreamStatus struct {
	// Ingested counts the entries stored as records.
	Ingested int64 `json:"ingested"`
	// Malformed counts the entries skipped because they could not be read
	// as records.
	// +optional
	Malformed int64 `json:"malformed,omitempty"`
	// LastEntryID is the newest entry stored.
	// +optional
	LastEntryID string `json:"lastEntryID,omitempty"`
	// Lag is how many entries of the stream the dataset had not read yet;
	// absent when the server cannot tell.
	// +optional
	Lag *int64 `json:"lag,omitempty"`
	// UpdatedAt is when the figures were read.
	// +optional
	UpdatedAt *metav1.Time `json:"updatedAt,omitempty"`
}

// LargeData is the control record of a dataset kept in an external store.
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:shortName=ld
// +kubebuilder:printcolumn:name="Phase",type=string,JSONPath=`.status.phase`
// +kubebuilder:printcolumn:name="Processed",type=integer,JSONPath=`.status.processedCount`
// +kubebuilder:printcolumn:name="Total",type=integer,JSONPath=`.status.totalItems`
// +kubebuilder:printcolumn:name="Ratio",type=string,JSONPath=`.status.completionRatio`
// +kubebuilder:printcolumn:name="Ingested",type=integer,JSONPath=`.status.stream.ingested`,priority=1
// +kubebuilder:printcolumn:name="Lag",type=integer,JSONPath=`.status.stream.lag`,priority=1
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type LargeData struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec   LargeDataSpec   `json:"spec"`
	Status LargeDataStatus `json:"status,omitempty"`
}

// LargeDataList is a list of LargeData.
// +kubebuilder:object:root=true
type LargeDataList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []LargeData `json:"items"`
}
