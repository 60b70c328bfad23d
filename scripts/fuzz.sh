#!/usr/bin/env bash
# make fuzz: run every fuzz target that `go test -list '^Fuzz' ./...` finds
# for FUZZTIME each, then keep what the fuzzer found interesting under each
# package's testdata/fuzz/<target>, where plain `go test` replays it as seed
# inputs. A target that fails is reported and the others still run; the
# script exits 1 if any failed (the failing input is under
# testdata/fuzz/<target>, where go test wrote it). Prints, per target, its
# duration, its execs, the inputs the fuzzer found new and the corpus size.
#
# FUZZ_TARGETS="FuzzA FuzzB" runs only those names; FUZZ_PARALLEL sets the
# workers (default: the number of CPUs); FUZZ_JOBS=2 runs two targets at a
# time, the workers shared between them.
set -euo pipefail
cd "$(dirname "$0")/.."

# deadline_race LOG: whether a failed run's log shows nothing but Go's own
# race at the -fuzztime deadline (go.dev/issue/75804, fixed in Go 1.27):
# its one failure is the target's "--- FAIL" line followed by "context
# deadline exceeded" alone, and no input was written. A real finding
# always writes its input ("Failing input written to") or says more.
deadline_race() {
	local log=$1
	grep -q 'Failing input written to' "$log" && return 1
	grep -Eq '^(panic:|fatal error:)' "$log" && return 1
	[ "$(grep -c -- '--- FAIL:' "$log")" -eq 1 ] || return 1
	[ "$(grep -A1 -- '--- FAIL:' "$log" | tail -n 1)" = "    context deadline exceeded" ] || return 1
	# Nothing else between the FAIL line and go test's own closing lines.
	[ "$(sed -n '/--- FAIL:/,$p' "$log" | grep -Evc '^(--- FAIL:|    context deadline exceeded$|FAIL$|exit status 1$|FAIL	)')" -eq 0 ]
}

# FUZZ_CLASSIFY=LOG prints what deadline_race says of a log, and exits.
if [ -n "${FUZZ_CLASSIFY:-}" ]; then
	if deadline_race "$FUZZ_CLASSIFY"; then echo deadline-race; else echo failure; fi
	exit 0
fi
fuzztime=${FUZZTIME:-1m}
parallel=${FUZZ_PARALLEL:-$(nproc 2>/dev/null || echo 2)}
module=$(go list -m)
cache=$(go env GOCACHE)/fuzz/$module

listing=$(go test -list '^Fuzz' ./...)
# go test -list prints a package's matching names, then its "ok" line.
targets=()
names=()
while read -r first second _; do
	case $first in
	Fuzz*) names+=("$first") ;;
	ok)
		dir=${second#"$module"}
		dir=.${dir}
		for n in "${names[@]+"${names[@]}"}"; do targets+=("$dir $n"); done
		names=()
		;;
	esac
done <<<"$listing"
if [ "${#targets[@]}" -eq 0 ]; then
	echo "fuzz: go test -list found no fuzz targets" >&2
	exit 1
fi

if [ -n "${FUZZ_TARGETS:-}" ]; then
	read -r -a want <<<"$FUZZ_TARGETS"
	kept=()
	for t in "${targets[@]}"; do
		for n in "${want[@]}"; do [ "${t##* }" = "$n" ] && kept+=("$t"); done
	done
	if [ "${#kept[@]}" -eq 0 ]; then
		echo "fuzz: FUZZ_TARGETS=\"$FUZZ_TARGETS\": no such fuzz target" >&2
		exit 1
	fi
	targets=("${kept[@]}")
fi

count() { if [ -d "$1" ]; then find "$1" -maxdepth 1 -type f | wc -l; else echo 0; fi; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# run_one PKG NAME INDEX fuzzes one target and leaves its summary line in
# $work/INDEX.line, its status in $work/INDEX.status.
run_one() {
	local pkg=$1 name=$2 i=$3
	local log=$work/$i.log dst=$pkg/testdata/fuzz/$name
	local before after start secs execs found src status=ok
	before=$(count "$dst")
	start=$(date +%s)
	local try
	for try in 1 2; do
		status=ok
		if [ "$jobs" -gt 1 ]; then
			go test -run XXX -fuzz "^$name\$" -fuzztime "$fuzztime" -fuzzminimizetime 20x \
				-parallel "$parallel" "$pkg" >"$log" 2>&1 || status=FAIL
			# Interleaved output would be unreadable: a failure's is shown whole.
			[ "$status" = ok ] || cat "$log"
		else
			go test -run XXX -fuzz "^$name\$" -fuzztime "$fuzztime" -fuzzminimizetime 20x \
				-parallel "$parallel" "$pkg" 2>&1 | tee "$log" || status=FAIL
		fi
		# Go's deadline race is run again once; a second one fails.
		if [ "$status" = FAIL ] && [ "$try" = 1 ] && deadline_race "$log"; then
			echo "fuzz: $pkg $name: only Go's -fuzztime deadline race (go.dev/issue/75804, no input written): run again"
			continue
		fi
		break
	done
	secs=$(($(date +%s) - start))
	# The last progress line: "fuzz: elapsed: 10s, execs: 12345 (1234/sec),
	# new interesting: 3 (total: 20)".
	execs=$(sed -n 's/.*execs: \([0-9]*\).*/\1/p' "$log" | tail -n 1)
	found=$(sed -n 's/.*new interesting: \([0-9]*\).*/\1/p' "$log" | tail -n 1)
	src=$cache/${pkg#./}/$name
	if [ "$status" = ok ] && [ -d "$src" ]; then
		mkdir -p "$dst"
		cp -n "$src"/* "$dst"/ 2>/dev/null || true
	fi
	after=$(count "$dst")
	echo "$status" >"$work/$i.status"
	printf '%-26s %-20s %-4s %5ss  execs %10s  new %4s  kept +%-4s corpus %5s\n' \
		"${pkg#./}" "$name" "$status" "$secs" "${execs:-0}" "${found:-0}" "$((after - before))" "$after" >"$work/$i.line"
}

# FUZZ_JOBS targets at a time (default 1), each with its share of the
# workers: CI runs them in pairs.
jobs=${FUZZ_JOBS:-1}
if [ "$jobs" -gt 1 ]; then
	parallel=$(((parallel + jobs - 1) / jobs))
fi
i=0
running=0
for t in "${targets[@]}"; do
	set -- $t
	echo "$1 $2" >"$work/$i.name"
	if [ "$jobs" -gt 1 ]; then
		if [ "$running" -ge "$jobs" ]; then
			wait -n || true
			running=$((running - 1))
		fi
		echo "fuzz: $1 $2"
		run_one "$1" "$2" "$i" &
		running=$((running + 1))
	else
		run_one "$1" "$2" "$i"
	fi
	i=$((i + 1))
done
wait
summary=()
failed=()
for ((j = 0; j < i; j++)); do
	summary+=("$(cat "$work/$j.line")")
	[ "$(cat "$work/$j.status")" = ok ] || failed+=("$(cat "$work/$j.name")")
done
printf '\nfuzz summary (FUZZTIME=%s, %s at a time, %s workers each, %s targets):\n' "$fuzztime" "$jobs" "$parallel" "${#targets[@]}"
printf '  %s\n' "${summary[@]}"
if [ "${#failed[@]}" -gt 0 ]; then
	printf '\nfuzz: failed (the input is under the package'"'"'s testdata/fuzz/<target>):\n' >&2
	printf '  %s\n' "${failed[@]}" >&2
	exit 1
fi
