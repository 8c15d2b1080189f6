#!/usr/bin/env bash
# Builds the control-plane binaries that envtest, the local cluster and the
# end-to-end tests run: kube-apiserver, kube-controller-manager and kubectl from
# k8s.io/kubernetes, etcd from go.etcd.io/etcd/server/v3 and kine from
# github.com/k3s-io/kine. Each comes from a
# small tools module under hack/tools/ so its dependencies stay out of the
# project's go.mod. Nothing but Go is needed; the first build takes about ten
# minutes on two cores, later runs are a no-op while the binaries are current.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
out=${K8S_BINS_DIR:-$root/bin/k8s}
mkdir -p "$out"

# version_of prints the version a tools module requires of a module.
version_of() { # module-dir module-path
	(cd "$1" && go list -m -f '{{.Version}}' "$2")
}

# build_if_stale builds one command unless the binary exists and its stamp
# (the tools module's go.sum, which pins every input) is unchanged.
build_if_stale() { # module-dir binary package [ldflags]
	local dir=$1 bin=$2 pkg=$3 ldflags=${4:-}
	local stamp
	stamp=$(cat "$dir/go.mod" "$dir/go.sum" | sha256sum | cut -d' ' -f1)
	if [[ -x "$out/$bin" && -f "$out/$bin.stamp" && $(cat "$out/$bin.stamp") == "$stamp" ]]; then
		echo "k8s-bins: $bin is current"
		return
	fi
	echo "k8s-bins: building $bin (the first build of all four takes about 10 minutes on 2 cores)"
	local start=$SECONDS
	(cd "$dir" && CGO_ENABLED=0 go build -trimpath -ldflags "-s -w $ldflags" -o "$out/$bin.tmp" "$pkg")
	mv "$out/$bin.tmp" "$out/$bin"
	echo "$stamp" >"$out/$bin.stamp"
	echo "k8s-bins: built $bin in $((SECONDS - start))s"
}

k8s=$root/hack/tools/k8s
etcd=$root/hack/tools/etcd
kver=$(version_of "$k8s" k8s.io/kubernetes)
# Without these, the binaries report v0.0.0-master and kubectl warns about skew.
vpkg=k8s.io/component-base/version
kflags="-X $vpkg.gitVersion=$kver -X $vpkg.gitMajor=1 -X $vpkg.gitMinor=$(cut -d. -f2 <<<"$kver") -X $vpkg.gitTreeState=clean"

build_if_stale "$etcd" etcd go.etcd.io/etcd/server/v3
build_if_stale "$k8s" kube-apiserver k8s.io/kubernetes/cmd/kube-apiserver "$kflags"
build_if_stale "$k8s" kube-controller-manager k8s.io/kubernetes/cmd/kube-controller-manager "$kflags"
build_if_stale "$k8s" kubectl k8s.io/kubernetes/cmd/kubectl "$kflags"

# kine, the etcd API over SQL databases, for KUBESHARD_STORAGE=kine and
# loadtest --storage kine.
kine=$root/hack/tools/kine
build_if_stale "$kine" kine github.com/k3s-io/kine "-X github.com/k3s-io/kine/pkg/version.Version=$(version_of "$kine" github.com/k3s-io/kine)"
