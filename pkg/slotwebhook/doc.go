// Package slotwebhook is the mutating admission webhook that gives every new
// object of a ring's sharded kinds, and every new child of such an object,
// its sharding.kubeshard.dev/slot label, and puts the label back when an
// update removes or changes it. It never rejects anything: an object it
// cannot label passes unchanged and the labeler labels it later.
package slotwebhook
