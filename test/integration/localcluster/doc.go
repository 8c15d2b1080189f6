// Package localcluster tests the end-to-end harness: a control plane started
// by test/localcluster and StatefulSet pods run as local processes by
// test/podrunner, scaled, crashed and stopped as the end-to-end tests of a
// sharded operator will do.
package localcluster
