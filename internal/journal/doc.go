// Package journal records every reconcile a member runs, one JSON line each
// (object, slot, member, generation, start, end, result), and checks merged
// journals of several members for the two things a sharded operator must
// never do: two members reconciling objects of the same slot at the same
// time, and an object whose latest generation no member reconciled. The
// end-to-end tests run every replica with a journal (--journal).
package journal
