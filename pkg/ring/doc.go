// Package ring maps Kubernetes objects to a fixed number of slots and slots to the
// live members of a sharded operator. It is pure computation with no Kubernetes
// imports, so the coordinator, the webhook and the member cache all agree on the
// same answers and every property can be tested without a cluster.
package ring
