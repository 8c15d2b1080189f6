// Package shardcache is a member's controller-runtime cache: objects of the
// sharded kinds (and of their child kinds) are cached only for the slots the
// member serves, through informers whose server-side label selector names
// exactly those slots (or, for kinds selected by uid, whose shardSelector
// names their hash ranges), and the set of slots changes while the process
// runs.
// Every other kind is served by an ordinary cache. Builders (For, Owns,
// Watches) and the manager's client work unchanged on top of it.
package shardcache
