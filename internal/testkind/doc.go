// Package testkind is the Widget, a small namespaced kind that exists only
// for tests: the library's tests shard Widgets (and their ConfigMaps) as an
// operator would shard its own kind, so that the library names no real one.
package testkind
