package slotwebhook

import (
	"fmt"

	"sigs.k8s.io/controller-runtime/pkg/manager"
	"sigs.k8s.io/controller-runtime/pkg/webhook"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"
)

// Path is where the webhook server serves the slot-label webhook.
const Path = "/mutate-slot-label"

// The webhook configuration of an operator must route the ring's sharded
// kinds and child kinds to Path; the handler then follows the ring's spec.
// Routing a kind the spec does not name costs a round trip and changes
// nothing; a kind the spec names but the configuration does not route is
// labelled by the labeler only. An operator generates the configuration
// from markers of its own (for example, cmd/largedata-operator/webhook.go
// has the example operator's; docs/implement-sharding.md says how), with the match
// conditions MatchSlotLabelTouched and MatchHasController:
//
// Sharded kinds go through on CREATE and UPDATE, but the matchCondition,
// evaluated inside the API server, calls the webhook on UPDATE only when the
// update removes or changes the slot label, so ordinary updates pay no round
// trip. Status updates are a subresource and never match.
//
// Children go through on CREATE only, and only with a controller
// ownerReference. Routing their UPDATEs would make every update of every
// ConfigMap in the cluster pay for a label check (most ConfigMaps carry no
// slot label, so no condition short of resolving the owner can skip them);
// a label removed from a child is put back by the labeler instead.
//
// timeoutSeconds is short because failurePolicy is Ignore: a hung webhook
// would otherwise delay every create by the default ten seconds, for a label
// that the labeler would write anyway.
const (
	// MatchSlotLabelTouched is the match condition for a sharded kind: a
	// CREATE, or an UPDATE that removes or changes the slot label.
	MatchSlotLabelTouched = "request.operation != 'UPDATE' || !has(object.metadata.labels) || !('sharding.kubeshard.dev/slot' in object.metadata.labels) || !has(oldObject.metadata.labels) || !('sharding.kubeshard.dev/slot' in oldObject.metadata.labels) || object.metadata.labels['sharding.kubeshard.dev/slot'] != oldObject.metadata.labels['sharding.kubeshard.dev/slot']"

	// MatchHasController is the match condition for a child kind: the object
	// has a controller ownerReference.
	MatchHasController = "has(object.metadata.ownerReferences) && object.metadata.ownerReferences.exists(r, has(r.controller) && r.controller)"
)

// Register serves h on server at Path.
func Register(server webhook.Server, h *Handler) {
	server.Register(Path, &admission.Webhook{Handler: h})
}

// Add serves the slot-label webhook of the ring opts.Ring on the manager's
// webhook server, reading the ring through the manager's cache. The webhook
// runs on every replica: it is stateless, so any replica can answer.
func Add(mgr manager.Manager, opts Options) error {
	h, err := New(mgr.GetCache(), mgr.GetRESTMapper(), opts)
	if err != nil {
		return fmt.Errorf("creating the slot-label webhook: %w", err)
	}
	Register(mgr.GetWebhookServer(), h)
	return nil
}
