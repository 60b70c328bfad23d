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
# workers (default: the number of CPUs).
set -euo pipefail
cd "$(dirname "$0")/.."
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

log=$(mktemp)
trap 'rm -f "$log"' EXIT
summary=()
failed=()
for t in "${targets[@]}"; do
	set -- $t
	pkg=$1 name=$2
	dst=$pkg/testdata/fuzz/$name
	before=$(count "$dst")
	start=$(date +%s)
	status=ok
	go test -run XXX -fuzz "^$name\$" -fuzztime "$fuzztime" -fuzzminimizetime 20x \
		-parallel "$parallel" "$pkg" 2>&1 | tee "$log" || status=FAIL
	secs=$(( $(date +%s) - start ))
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
	[ "$status" = ok ] || failed+=("$pkg $name")
	summary+=("$(printf '%-26s %-20s %-4s %5ss  execs %10s  new %4s  kept +%-4s corpus %5s' \
		"${pkg#./}" "$name" "$status" "$secs" "${execs:-0}" "${found:-0}" "$((after - before))" "$after")")
done
printf '\nfuzz summary (FUZZTIME=%s, %s workers, %s targets):\n' "$fuzztime" "$parallel" "${#targets[@]}"
printf '  %s\n' "${summary[@]}"
if [ "${#failed[@]}" -gt 0 ]; then
	printf '\nfuzz: failed (the input is under the package'"'"'s testdata/fuzz/<target>):\n' >&2
	printf '  %s\n' "${failed[@]}" >&2
	exit 1
fi
