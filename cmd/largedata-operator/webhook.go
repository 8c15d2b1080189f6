package main

// What kubeshard's labeler and slot-label webhook need for this operator's
// ring, whose kinds only the operator knows (the library's own markers cover
// the ShardRing, the Leases and events): the labeler reads and patches
// LargeData and their child ConfigMaps, and the webhook configuration routes
// their creates to the slot-label webhook (pkg/slotwebhook). The match
// conditions are slotwebhook.MatchSlotLabelTouched and
// slotwebhook.MatchHasController; a test in test/integration/deploy checks
// that the generated configuration carries them.
//
// +kubebuilder:rbac:groups=data.kubeshard.dev,resources=largedata,verbs=get;list;watch;patch
// +kubebuilder:rbac:groups="",resources=configmaps,verbs=get;list;watch;patch
//
// +kubebuilder:webhook:path=/mutate-slot-label,mutating=true,failurePolicy=ignore,sideEffects=None,admissionReviewVersions=v1,timeoutSeconds=3,name=slot-label.sharding.kubeshard.dev,groups=data.kubeshard.dev,resources=largedata,verbs=create;update,versions=*,patch=`{"matchConditions":[{"name":"create-or-slot-label-touched","expression":"request.operation != 'UPDATE' || !has(object.metadata.labels) || !('sharding.kubeshard.dev/slot' in object.metadata.labels) || !has(oldObject.metadata.labels) || !('sharding.kubeshard.dev/slot' in oldObject.metadata.labels) || object.metadata.labels['sharding.kubeshard.dev/slot'] != oldObject.metadata.labels['sharding.kubeshard.dev/slot']"}]}`
// +kubebuilder:webhook:path=/mutate-slot-label,mutating=true,failurePolicy=ignore,sideEffects=None,admissionReviewVersions=v1,timeoutSeconds=3,name=child-slot-label.sharding.kubeshard.dev,groups="",resources=configmaps,verbs=create,versions=v1,patch=`{"matchConditions":[{"name":"has-controller","expression":"has(object.metadata.ownerReferences) && object.metadata.ownerReferences.exists(r, has(r.controller) && r.controller)"}]}`
