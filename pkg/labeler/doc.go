// Package labeler gives the slot label to the objects that the webhook
// missed: objects created before kubeshard was installed, with generateName,
// or while the webhook was down. It watches only objects whose label is
// missing or names no slot (abc, 99999), so it holds almost nothing in
// memory and repairs those at once, and it periodically sweeps every object
// of the ring's kinds to correct labels that name the wrong slot. It runs on
// the coordinator only.
package labeler
