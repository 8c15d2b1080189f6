package membership

import (
	"context"
	"errors"
	"fmt"

	coordinationv1 "k8s.io/api/coordination/v1"
	"k8s.io/apimachinery/pkg/util/validation"
	"sigs.k8s.io/controller-runtime/pkg/client"

	shardingv1alpha1 "github.com/kubeshard/kubeshard/api/sharding/v1alpha1"
	ringpkg "github.com/kubeshard/kubeshard/pkg/ring"
)

// LabelMember, on a member's Lease, names the member (its pod name). It is
// written next to holderIdentity because a released Lease has no holder, and a
// Lease name cannot be split back into ring and member when both contain dashes.
const LabelMember = "sharding.kubeshard.dev/member"

// ErrInvalidOptions is wrapped by every error that rejects Options.
var ErrInvalidOptions = errors.New("invalid membership options")

// LeaseName is the name of the Lease that member of ring renews.
func LeaseName(ring, member string) string {
	return ring + "-" + member
}

// validateNames checks what ends up in the Lease's name and labels, so a bad
// ring or pod name fails at start-up rather than on every renewal.
func validateNames(ring, member string) error {
	if ring == "" {
		return fmt.Errorf("%w: Ring is required", ErrInvalidOptions)
	}
	if member == "" {
		return fmt.Errorf("%w: Name is required", ErrInvalidOptions)
	}
	if errs := validation.IsValidLabelValue(ring); len(errs) > 0 {
		return fmt.Errorf("%w: Ring %q is not a valid label value: %v", ErrInvalidOptions, ring, errs)
	}
	if errs := validation.IsValidLabelValue(member); len(errs) > 0 {
		return fmt.Errorf("%w: Name %q is not a valid label value: %v", ErrInvalidOptions, member, errs)
	}
	if errs := validation.IsDNS1123Subdomain(LeaseName(ring, member)); len(errs) > 0 {
		return fmt.Errorf("%w: Lease name %q is not valid: %v", ErrInvalidOptions, LeaseName(ring, member), errs)
	}
	return nil
}

// ReadWarm reads the slots that member of ring, whose Lease is in namespace,
// publishes as warm (AnnotationWarm): those of its incoming slots whose
// objects it has cached. warms is false when the member does not warm slots
// at all (no annotation, or no holder); slots is the ring's spec.slots.
func ReadWarm(ctx context.Context, r client.Reader, namespace, ring, member string, slots int) (warm []int, warms bool, err error) {
	lease := &coordinationv1.Lease{}
	if err := r.Get(ctx, client.ObjectKey{Namespace: namespace, Name: LeaseName(ring, member)}, lease); err != nil {
		return nil, false, fmt.Errorf("reading the Lease of member %s: %w", member, err)
	}
	text, ok := lease.Annotations[shardingv1alpha1.AnnotationWarm]
	if !ok || lease.Spec.HolderIdentity == nil || *lease.Spec.HolderIdentity != member {
		return nil, false, nil
	}
	warm, err = ringpkg.ParseRanges(text, slots)
	if err != nil {
		return nil, true, fmt.Errorf("member %s: annotation %s: %w", member, shardingv1alpha1.AnnotationWarm, err)
	}
	return warm, true, nil
}
