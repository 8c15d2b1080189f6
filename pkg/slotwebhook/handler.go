package slotwebhook

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	"gomodules.xyz/jsonpatch/v2"
	admissionv1 "k8s.io/api/admission/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
	ctrlmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	shardingv1alpha1 "github.com/kubeshard/kubeshard/api/sharding/v1alpha1"
	"github.com/kubeshard/kubeshard/pkg/slotlabel"
)

// Options configure a Handler.
type Options struct {
	// Ring is the namespaced name of the ShardRing whose spec says which kinds
	// are sharded and which are children. Required.
	Ring types.NamespacedName

	// Finalizers are set on every CREATE of an object of these kinds that
	// lacks them, in the same patch as the slot label: an operator whose
	// reconciler's first write would otherwise be its finalizer saves that
	// write (and its watch event to every member) per object. The reconciler
	// must still add the finalizer when it is missing: an object created
	// while the webhook was unreachable is admitted without it
	// (failurePolicy Ignore). Default: none.
	Finalizers map[schema.GroupKind]string

	// Registerer receives the webhook's metrics.
	// Default: controller-runtime's metrics.Registry, which the manager serves.
	Registerer prometheus.Registerer
}

func (o *Options) applyDefaults() error {
	if o.Ring.Name == "" || o.Ring.Namespace == "" {
		return fmt.Errorf("options: Ring needs a namespace and a name, got %q", o.Ring.String())
	}
	if o.Registerer == nil {
		o.Registerer = ctrlmetrics.Registry
	}
	return nil
}

// Handler is the admission handler of the slot-label webhook. It works for
// any kind, reading only the object's metadata, and follows the ring's spec:
// the webhook configuration decides which requests reach it, the spec which
// of them get a label.
type Handler struct {
	// Reader reads the ShardRing; in a manager, the manager's cache, so that
	// an admission request costs no API call.
	Reader client.Reader
	// Mapper resolves the ring's resources to kinds.
	Mapper meta.RESTMapper

	ring       types.NamespacedName
	finalizers map[schema.GroupKind]string
	metrics    *metrics

	mu sync.Mutex
	// kinds were resolved from the ring's spec at generation seen: the spec
	// changes only with the generation, and resolving may need discovery.
	kinds *slotlabel.Kinds
	seen  ringVersion
}

type ringVersion struct {
	uid        types.UID
	generation int64
}

var _ admission.Handler = (*Handler)(nil)

// New returns a handler for the ring opts.Ring.
func New(reader client.Reader, mapper meta.RESTMapper, opts Options) (*Handler, error) {
	if err := opts.applyDefaults(); err != nil {
		return nil, err
	}
	m, err := newMetrics(opts.Registerer, opts.Ring.Name)
	if err != nil {
		return nil, err
	}
	return &Handler{Reader: reader, Mapper: mapper, ring: opts.Ring, finalizers: maps.Clone(opts.Finalizers), metrics: m}, nil
}

// Handle answers an admission request for a CREATE or UPDATE of an object:
// it allows every request, with a JSON patch setting the slot label when the
// object has a slot and its label is missing or wrong, and, on CREATE, the
// finalizer Options.Finalizers names for the object's kind. A client cannot choose
// its slot: whatever it wrote is overwritten. Recomputing on UPDATE is
// correct because namespace, name and (in practice) the controller owner
// never change.
//
// Failures allow the object unlabelled (the labeler labels it later), as the
// webhook's failurePolicy Ignore does for an unreachable webhook: sharding
// must never block a user's write.
func (h *Handler) Handle(ctx context.Context, req admission.Request) admission.Response {
	log := logf.FromContext(ctx).WithValues("ring", h.ring.Name)
	resp, result, err := h.handle(ctx, req)
	h.metrics.assignments.WithLabelValues(h.ring.Name, result).Inc()
	if err != nil {
		log.Error(err, "Could not assign a slot, allowing the object unlabelled")
		return admission.Allowed("")
	}
	return resp
}

func (h *Handler) handle(ctx context.Context, req admission.Request) (admission.Response, string, error) {
	log := logf.FromContext(ctx).WithValues("ring", h.ring.Name)
	if (req.Operation != admissionv1.Create && req.Operation != admissionv1.Update) || req.SubResource != "" {
		return admission.Allowed(""), resultSkipped, nil
	}

	// Metadata is all a slot depends on. Decoding only that needs no scheme,
	// so the handler serves any kind, and builds nothing of the rest.
	var obj metav1.PartialObjectMetadata
	if err := json.Unmarshal(req.Object.Raw, &obj); err != nil {
		return admission.Response{}, resultError, fmt.Errorf("decoding the metadata of the admitted object: %w", err)
	}
	if obj.Namespace == "" {
		obj.Namespace = req.Namespace
	}

	gk := schema.GroupKind{Group: req.Kind.Group, Kind: req.Kind.Kind}
	var patch []jsonpatch.JsonPatchOperation
	// An object with neither name nor generateName has no metadata to patch,
	// and the API server refuses it anyway.
	named := obj.Name != "" || obj.GenerateName != ""
	if f, ok := h.finalizers[gk]; ok && named && req.Operation == admissionv1.Create && !slices.Contains(obj.Finalizers, f) {
		patch = append(patch, finalizerPatch(obj.Finalizers, f))
	}

	kinds, err := h.kindsFor(ctx)
	if apierrors.IsNotFound(err) {
		log.V(1).Info("ShardRing not found, allowing the object unlabelled")
		return admission.Patched("", patch...), resultSkipped, nil
	}
	if err != nil {
		return admission.Response{}, resultError, err
	}

	slot, ok := kinds.SlotOf(&obj, gk)
	if !ok {
		// An object created with generateName has no name yet: the API server
		// generates it after admission. The labeler labels it.
		log.V(1).Info("Object has no slot, allowing it unlabelled", "kind", gk.String(),
			"generateName", obj.GenerateName)
		return admission.Patched("", patch...), resultSkipped, nil
	}
	want := slotlabel.Value(slot)
	have, had := obj.Labels[shardingv1alpha1.LabelSlot]
	if had && have == want {
		return admission.Patched("", patch...), resultUnchanged, nil
	}
	log.V(1).Info("Setting slot label", "kind", gk.String(), "slot", slot, "previous", have)
	return admission.Patched("", append(patch, labelPatch(obj.Labels, want))...), resultLabelled, nil
}

// finalizerPatch returns the JSON patch that appends finalizer to the
// object's finalizers.
func finalizerPatch(finalizers []string, finalizer string) jsonpatch.JsonPatchOperation {
	if len(finalizers) == 0 {
		// "add" replaces an absent, null or empty finalizers member alike.
		return jsonpatch.NewOperation("add", "/metadata/finalizers", []string{finalizer})
	}
	// "-" appends to the array (RFC 6902).
	return jsonpatch.NewOperation("add", "/metadata/finalizers/-", finalizer)
}

// labelPatch returns the JSON patch that sets the slot label to value. It is
// built by hand rather than by diffing two encodings of the object
// (admission.PatchResponseFromRaw), which would decode and re-encode the
// whole object on every request to find this one operation.
func labelPatch(labels map[string]string, value string) jsonpatch.JsonPatchOperation {
	if len(labels) == 0 {
		// "add" replaces an absent, null or empty labels member alike.
		return jsonpatch.NewOperation("add", "/metadata/labels", map[string]string{shardingv1alpha1.LabelSlot: value})
	}
	// "add" on an existing member replaces its value.
	return jsonpatch.NewOperation("add", slotLabelPointer, value)
}

// slotLabelPointer is the JSON pointer (RFC 6901) of the slot label: "/" in
// the key is escaped as "~1", "~" as "~0".
var slotLabelPointer = "/metadata/labels/" +
	strings.NewReplacer("~", "~0", "/", "~1").Replace(shardingv1alpha1.LabelSlot)

// kindsFor returns the kinds of the ring as its current spec says.
func (h *Handler) kindsFor(ctx context.Context) (*slotlabel.Kinds, error) {
	sr := &shardingv1alpha1.ShardRing{}
	if err := h.Reader.Get(ctx, h.ring, sr); err != nil {
		return nil, fmt.Errorf("reading ShardRing %s: %w", h.ring, err)
	}
	v := ringVersion{uid: sr.UID, generation: sr.Generation}
	h.mu.Lock()
	kinds, seen := h.kinds, h.seen
	h.mu.Unlock()
	if kinds != nil && seen == v {
		return kinds, nil
	}
	// Resolved outside the lock: a discovery round trip must not hold up
	// requests of other kinds. Concurrent requests may resolve twice; the
	// results are equal.
	kinds, err := slotlabel.NewKinds(sr.Spec, h.Mapper)
	if err != nil {
		return nil, fmt.Errorf("resolving the kinds of ShardRing %s: %w", h.ring, err)
	}
	h.mu.Lock()
	h.kinds, h.seen = kinds, v
	h.mu.Unlock()
	return kinds, nil
}
