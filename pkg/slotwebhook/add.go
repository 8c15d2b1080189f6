package slotwebhook

import (
	"fmt"

	"sigs.k8s.io/controller-runtime/pkg/manager"
	"sigs.k8s.io/controller-runtime/pkg/webhook"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"
)

// Path is where the webhook server serves the slot-label webhook.
const Path = "/mutate-slot-label"

// The webhook configuration generated from the markers below must route the
// ring's sharded kinds and child kinds to Path; the handler then follows the
// ring's spec. Routing a kind the spec does not name costs a round trip and
// changes nothing; a kind the spec names but the configuration does not route
// is labelled by the labeler only. The markers route the example operator's
// ring: LargeData and its child ConfigMaps.
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

// +kubebuilder:webhook:path=/mutate-slot-label,mutating=true,failurePolicy=ignore,sideEffects=None,admissionReviewVersions=v1,timeoutSeconds=3,name=slot-label.sharding.kubeshard.dev,groups=data.kubeshard.dev,resources=largedata,verbs=create;update,versions=*,patch=`{"matchConditions":[{"name":"create-or-slot-label-touched","expression":"request.operation != 'UPDATE' || !has(object.metadata.labels) || !('sharding.kubeshard.dev/slot' in object.metadata.labels) || !has(oldObject.metadata.labels) || !('sharding.kubeshard.dev/slot' in oldObject.metadata.labels) || object.metadata.labels['sharding.kubeshard.dev/slot'] != oldObject.metadata.labels['sharding.kubeshard.dev/slot']"}]}`
// +kubebuilder:webhook:path=/mutate-slot-label,mutating=true,failurePolicy=ignore,sideEffects=None,admissionReviewVersions=v1,timeoutSeconds=3,name=child-slot-label.sharding.kubeshard.dev,groups="",resources=configmaps,verbs=create,versions=v1,patch=`{"matchConditions":[{"name":"has-controller","expression":"has(object.metadata.ownerReferences) && object.metadata.ownerReferences.exists(r, has(r.controller) && r.controller)"}]}`

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
