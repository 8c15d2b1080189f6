// Package testpg runs a throwaway PostgreSQL server for integration tests:
// initdb into a temporary folder, postgres on a free loopback port with its
// Unix socket in that folder, one database created. Running as root (as in
// CI containers), it runs the server as the "postgres" user, because postgres
// refuses root. It finds the binaries of the Debian and Ubuntu packages
// (/usr/lib/postgresql/<version>/bin) or TESTPG_BIN_DIR, and works on Linux
// only: it relies on PR_SET_PDEATHSIG so that no server outlives its test.
package testpg
