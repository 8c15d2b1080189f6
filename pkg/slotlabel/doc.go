// Package slotlabel says which slot an object belongs to and writes it into
// the object's sharding.kubeshard.dev/slot label. A sharded object's slot
// derives from its namespace and name, a child's from its controller owner's,
// so the answer is a pure function of the object and the ring's spec: the
// webhook, the labeler and an operator creating children all agree without
// looking anything up. In selectorMode ShardSelector only children are
// labelled, with the slot of their owner's uid, which their ownerReference
// carries.
package slotlabel
