package slotlabel

import (
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	shardingv1alpha1 "github.com/kubeshard/kubeshard/api/sharding/v1alpha1"
)

// FuzzRead reads slot labels a person may have written by hand. A label is
// read as a slot only when it is that slot's canonical value: members select
// their objects by the exact text of the label (slot in (7, 8, ...)), so a
// label such as "007" that read as slot 7 would hide the object from every
// member while the labeler took it for correct.
func FuzzRead(f *testing.F) {
	for _, v := range []string{"0", "7", "1023", "1024", "99999", "-1", "abc", "007", "+7", " 7", "7 ", "", "0x7"} {
		f.Add(v, uint16(1024))
	}
	f.Fuzz(func(t *testing.T, value string, n uint16) {
		slots := int(n%16384) + 1
		obj := &metav1.ObjectMeta{Labels: map[string]string{shardingv1alpha1.LabelSlot: value}}
		slot, ok := Read(obj, slots)
		if !ok {
			return
		}
		if slot < 0 || slot >= slots || Value(slot) != value {
			t.Fatalf("Read(%q, %d slots) = %d: a label read as a slot must be that slot's value %q, in [0, %d)", value, slots, slot, Value(slot), slots)
		}
	})
}
