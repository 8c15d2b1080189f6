package membership

import (
	"errors"
	"fmt"

	"k8s.io/apimachinery/pkg/util/validation"
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
