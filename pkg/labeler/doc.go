// Package labeler gives the slot label to the objects that the webhook
// missed: objects created before kubeshard was installed, with generateName,
// or while the webhook was down. It watches only objects without the label,
// so it holds almost nothing in memory, and it periodically sweeps every
// object of the ring's kinds to correct labels that are wrong. It runs on the
// coordinator only.
package labeler
