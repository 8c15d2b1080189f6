package largedata

import (
	"crypto/sha256"
	"encoding/hex"
	"slices"
	"strings"

	datav1alpha1 "github.com/kubeshard/kubeshard/api/data/v1alpha1"
	"github.com/kubeshard/kubeshard/pkg/largedata/store"
)

// Transform returns the transformation of a processing, and false for a
// processing this operator does not know: one added to the API by a newer
// version of the operator, which a spec can then name.
func Transform(p datav1alpha1.Processing) (store.Transform, bool) {
	switch p {
	case datav1alpha1.ProcessingChecksum:
		return checksum, true
	case datav1alpha1.ProcessingUppercase:
		return uppercase, true
	case datav1alpha1.ProcessingReverse:
		return reverse, true
	}
	return nil, false
}

// checksum is the hexadecimal SHA-256 of the payload.
func checksum(payload string) (string, error) {
	sum := sha256.Sum256([]byte(payload))
	return hex.EncodeToString(sum[:]), nil
}

func uppercase(payload string) (string, error) { return strings.ToUpper(payload), nil }

// reverse reverses the payload's characters.
func reverse(payload string) (string, error) {
	r := []rune(payload)
	slices.Reverse(r)
	return string(r), nil
}
