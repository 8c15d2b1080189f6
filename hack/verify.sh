#!/usr/bin/env bash
# Fails when the tree is not what the generators, gofmt and go mod tidy would
# make of it. Generated files are regenerated into the work tree and compared
# with git, so a stale file shows up as a diff that names it.
set -euo pipefail
cd "$(dirname "$0")/.."

fail=0
generated=(api deploy/base/crd deploy/base/rbac deploy/base/webhook)

make --no-print-directory generate >/dev/null
if ! git diff --exit-code --stat -- "${generated[@]}" || [[ -n $(git status --porcelain --untracked-files=all -- "${generated[@]}") ]]; then
	git status --short -- "${generated[@]}"
	echo "verify: generated files are stale; run 'make generate' and commit the result" >&2
	fail=1
fi

unformatted=$(gofmt -l $(git ls-files '*.go'))
if [[ -n $unformatted ]]; then
	echo "verify: not gofmt'ed:" >&2
	echo "$unformatted" >&2
	fail=1
fi

if ! go vet ./...; then
	echo "verify: go vet failed" >&2
	fail=1
fi

for mod in . hack/tools/k8s hack/tools/etcd; do
	if ! (cd "$mod" && go mod tidy -diff >/dev/null); then
		echo "verify: go.mod of $mod is not tidy; run 'go mod tidy' there" >&2
		fail=1
	fi
done

exit $fail
