package slotlabel

import (
	"strconv"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	shardingv1alpha1 "github.com/kubeshard/kubeshard/api/sharding/v1alpha1"
	"github.com/kubeshard/kubeshard/pkg/ring"
)

// Value is the label value of a slot: the slot as a decimal number.
func Value(slot int) string { return strconv.Itoa(slot) }

// SetSlotLabel sets obj's slot label to slot and reports whether it changed.
func SetSlotLabel(obj metav1.Object, slot int) (changed bool) {
	want := Value(slot)
	labels := obj.GetLabels()
	if have, ok := labels[shardingv1alpha1.LabelSlot]; ok && have == want {
		return false
	}
	if labels == nil {
		labels = make(map[string]string, 1)
	}
	labels[shardingv1alpha1.LabelSlot] = want
	obj.SetLabels(labels)
	return true
}

// Read returns obj's slot label parsed, and whether it holds a slot of
// a ring with the given number of slots, written as Value writes it. A label
// such as "007" is not slot 7: members select their objects by the label's
// exact text, so no member would see the object, and the labeler must
// rewrite it rather than take it for correct.
func Read(obj metav1.Object, slots int) (slot int, ok bool) {
	v, ok := obj.GetLabels()[shardingv1alpha1.LabelSlot]
	if !ok {
		return 0, false
	}
	slot, err := strconv.Atoi(v)
	if err != nil || slot < 0 || slot >= slots || Value(slot) != v {
		return 0, false
	}
	return slot, true
}

// LabelChildByUID is LabelChild for a ring in selectorMode ShardSelector: the
// owner's slot is the slot of its uid (ring.UIDSlot), which the API server
// selects it by. It reports false and leaves child alone when the owner has no
// uid yet, which an owner read from the API server always has.
func LabelChildByUID(owner, child metav1.Object, slots int) bool {
	slot := ring.UIDSlot(string(owner.GetUID()), slots)
	if slot < 0 {
		return false
	}
	SetSlotLabel(child, slot)
	return true
}

// LabelChild gives child, before the operator creates it, the slot of its
// owner in a ring of the given number of slots: the owner's slot label, or
// when the owner has no valid one, the slot of the owner's namespace and name.
// Call it in every reconciler that creates children. A child without the label
// is invisible to every member's cache, so its owner would try to create it
// again and again; the webhook and the labeler would label it too, but only
// after the member has already missed it.
//
// It reports false and leaves child alone when the owner has neither a label
// nor a name, which an owner read from the API server always has.
func LabelChild(owner, child metav1.Object, slots int) bool {
	slot, ok := Read(owner, slots)
	if !ok {
		if owner.GetName() == "" || slots < 1 {
			return false
		}
		slot = ring.Slot(owner.GetNamespace(), owner.GetName(), slots)
	}
	SetSlotLabel(child, slot)
	return true
}
