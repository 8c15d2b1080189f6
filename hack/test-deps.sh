#!/usr/bin/env bash
# Makes sure the programs the tests start, and that Go cannot build, are on
# this machine: PostgreSQL's server binaries (the LargeData store's tests
# start a throwaway server on a loopback port) and Prometheus with promtool
# (the dashboards test) and Redis (the stream source's tests start a throwaway
# redis-server on a loopback port). On Debian or Ubuntu as root it installs what is
# missing from the distribution's packages, without creating a database
# cluster or starting any service; elsewhere it stops and prints the command
# to run. Called by `make test`; nothing to do when all is there.
set -euo pipefail

have_postgres() {
	local dir
	for dir in ${TESTPG_BIN_DIR:-} /usr/lib/postgresql/*/bin; do
		[[ -x $dir/initdb && -x $dir/postgres ]] && return 0
	done
	command -v initdb >/dev/null && command -v postgres >/dev/null
}

missing=()
packages=()
if ! have_postgres; then
	missing+=("PostgreSQL's server (initdb, postgres)")
	packages+=(postgresql)
fi
if ! command -v prometheus >/dev/null || ! command -v promtool >/dev/null; then
	missing+=("Prometheus (prometheus, promtool)")
	packages+=(prometheus)
fi
if ! command -v redis-server >/dev/null; then
	missing+=("Redis (redis-server)")
	packages+=(redis-server)
fi
if ((${#missing[@]} == 0)); then
	exit 0
fi

echo "test-deps: missing: $(IFS=';'; echo "${missing[*]}")"
if ((EUID != 0)) || ! command -v apt-get >/dev/null; then
	echo "test-deps: install them, then run make test again; on Debian or Ubuntu:" >&2
	echo "  sudo apt-get install -y --no-install-recommends ${packages[*]}" >&2
	if [[ " ${packages[*]} " == *" postgresql "* ]]; then
		echo "  (or point TESTPG_BIN_DIR at a folder holding PostgreSQL's initdb and postgres)" >&2
	fi
	exit 1
fi

echo "test-deps: installing ${packages[*]} from the distribution's packages (no service is started)"
export DEBIAN_FRONTEND=noninteractive
# No system database cluster: the tests make their own.
mkdir -p /etc/postgresql-common
if [[ ! -e /etc/postgresql-common/createcluster.conf ]]; then
	echo "create_main_cluster = false" >/etc/postgresql-common/createcluster.conf
fi
# No service may start: a policy that refuses every start, for the
# length of the install only.
if [[ ! -e /usr/sbin/policy-rc.d ]]; then
	printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
	chmod +x /usr/sbin/policy-rc.d
	trap 'rm -f /usr/sbin/policy-rc.d' EXIT
fi
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${packages[@]}" >/dev/null

if ! have_postgres || ! command -v prometheus >/dev/null || ! command -v promtool >/dev/null || ! command -v redis-server >/dev/null; then
	echo "test-deps: the install finished, but a program is still missing" >&2
	exit 1
fi
echo "test-deps: done"
