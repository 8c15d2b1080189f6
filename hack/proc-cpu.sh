#!/usr/bin/env bash
# Prints, every INTERVAL seconds until stopped, the CPU (in cores) of each
# process of a local load test: kube-apiserver, etcd, kube-controller-manager,
# PostgreSQL (all its backends together), the loadtest harness and each
# operator member (by its POD_NAME), with the 1-minute load average. It reads
# /proc, so it sees every process from outside, also those whose own metrics
# the harness does not scrape (etcd, PostgreSQL). Used for the rebalance
# figures of BENCHMARKS.md:
#
#   hack/proc-cpu.sh 2 > cpu.txt &    # beside `go run ./loadtest run ...`
#
# Each line: <unix time> la=<load> <process>=<cores> ...
set -euo pipefail
interval=${1:-2}
hz=$(getconf CLK_TCK)

# sample prints "<name> <pid> <utime+stime ticks>" for every process of
# interest, with bash's builtins only: a fork per process would cost more CPU
# than some of the processes it measures.
sample() {
	local dir pid comm name pod stat line
	local -a f
	for dir in /proc/[0-9]*; do
		pid=${dir#/proc/}
		read -r comm <"$dir/comm" 2>/dev/null || continue
		case $comm in
		kube-apiserver) name=apiserver ;;
		etcd) name=etcd ;;
		kube-controller) name=kcm ;;
		postgres) name=postgres ;;
		loadtest) name=harness ;;
		largedata-opera)
			name=operator-$pid
			while IFS= read -r -d '' line; do
				[[ $line == POD_NAME=* ]] && name=${line#POD_NAME=}
			done <"$dir/environ" 2>/dev/null || true
			;;
		*) continue ;;
		esac
		read -r stat <"$dir/stat" 2>/dev/null || continue
		# After the command's closing parenthesis: utime is the 12th field, stime the 13th.
		read -r -a f <<<"${stat##*) }"
		echo "$name $pid $((f[11] + f[12]))"
	done
}

prev=$(sample)
prev_t=$(date +%s.%N)
while sleep "$interval"; do
	cur=$(sample)
	now=$(date +%s.%N)
	load=$(cut -d' ' -f1 /proc/loadavg)
	awk -v hz="$hz" -v t0="$prev_t" -v t1="$now" -v la="$load" '
		NR == FNR { before[$1 " " $2] = $3; next }
		{ k = $1 " " $2; used[$1] += (k in before) ? $3 - before[k] : 0 }
		END {
			line = int(t1) " la=" la
			for (name in used) line = line sprintf(" %s=%.2f", name, used[name] / hz / (t1 - t0))
			print line
		}' <(echo "$prev") <(echo "$cur")
	prev=$cur
	prev_t=$now
done
