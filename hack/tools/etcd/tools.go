//go:build tools

// Package tools pins the etcd server that the tests and the local cluster run,
// in its own module so its dependencies stay out of the project's go.mod.
package tools

import _ "go.etcd.io/etcd/server/v3"
