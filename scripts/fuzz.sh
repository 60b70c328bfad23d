#!/usr/bin/env bash
# make fuzz: run every fuzz target for FUZZTIME, then keep what the fuzzer
# found interesting under each package's testdata/fuzz/<target>, where plain
# `go test` replays it as seed inputs. Prints each target's duration and
# corpus size.
set -euo pipefail
fuzztime=${FUZZTIME:-1m}
parallel=${FUZZ_PARALLEL:-$(nproc 2>/dev/null || echo 2)}
cache=$(go env GOCACHE)/fuzz/github.com/req-mtls/req-mtls
targets=(
	"internal/tlsflags FuzzParse"
	"internal/clienthello FuzzConn"
	"internal/clienthello FuzzSummarize"
	"internal/server FuzzReportJSON"
	"internal/auth FuzzLoadCRLs"
	"internal/httpsig FuzzParse"
)
if [ -n "${FUZZ_TARGETS:-}" ]; then
	read -r -a names <<<"$FUZZ_TARGETS"
	kept=()
	for t in "${targets[@]}"; do
		for n in "${names[@]}"; do [ "${t##* }" = "$n" ] && kept+=("$t"); done
	done
	targets=("${kept[@]}")
fi
summary=()
for t in "${targets[@]}"; do
	set -- $t
	pkg=$1 name=$2
	start=$(date +%s)
	go test -run XXX -fuzz "^$name\$" -fuzztime "$fuzztime" -fuzzminimizetime 20x -parallel "$parallel" "./$pkg"
	secs=$(( $(date +%s) - start ))
	src=$cache/$pkg/$name
	dst=$pkg/testdata/fuzz/$name
	if [ -d "$src" ]; then
		mkdir -p "$dst"
		cp -n "$src"/* "$dst"/ 2>/dev/null || true
	fi
	n=$(ls "$dst" 2>/dev/null | wc -l)
	summary+=("$(printf '%-22s %-16s %5ss  corpus %5s entries' "$pkg" "$name" "$secs" "$n")")
done
printf '\nfuzz summary (FUZZTIME=%s, %s workers):\n' "$fuzztime" "$parallel"
printf '  %s\n' "${summary[@]}"
