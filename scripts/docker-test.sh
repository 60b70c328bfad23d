#!/usr/bin/env bash
# Tests Dockerfile and docker-compose.yml for real, with Podman and
# podman-compose in place of a Docker engine, as root:
#
#  1. a stand-in for the Dockerfile's build base (golang:1.26-bookworm): a
#     Debian rootfs from debootstrap with this machine's Go toolchain, made
#     once and cached, as no image registry is reachable here;
#  2. the server and client images built by podman-compose from the real
#     Dockerfile (and its artefacts target by podman build), modules coming
#     from this machine's module cache as a file:// GOPROXY, with no network
#     in the build;
#  3. the server service started as docker-compose.yml defines it, then the
#     client service run as `make docker-client-request-local` does: the
#     flagged request must come back "Cert validated: true", and an
#     unflagged one must not be asked for a certificate.
#
# It works on a copy of the working tree (tracked and untracked files, not
# the ignored ones) with fresh certificates owned by an unprivileged user,
# so testdata/ is left alone. Containers, networks and the copy are removed
# on every exit; images stay in the cache as build cache.
#
# Needs root, podman, runc, podman-compose, go, and debootstrap unless the
# base image is cached; without them it skips, or fails when
# REQ_MTLS_REQUIRE_PEERS is set. Settings:
#   REQ_MTLS_DOCKER_CACHE   podman storage kept between runs
#                           (default /var/cache/req-mtls-docker-test)
#   REQ_MTLS_DEBIAN_MIRROR  debootstrap's mirror (default: the Debian
#                           mirror in /etc/apt/sources.list*)
#   REQ_MTLS_DOCKER_REBASE  set to remake the cached base image
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
PROJECT=req-mtls-docker-test
CACHE=${REQ_MTLS_DOCKER_CACHE:-/var/cache/req-mtls-docker-test}
RUNROOT=/run/req-mtls-docker-test
PORT=8775
# The certificates' owner in the test: an ordinary user's ids, not the
# images' own 65532, so that the compose file's user: setting is exercised.
CERT_OWNER=1000:1000
START=$(date +%s)

say() { printf 'docker-test: %s\n' "$*"; }
fail() { printf 'docker-test: FAIL: %s\n' "$*" >&2; exit 1; }
skip() {
	if [ -n "${REQ_MTLS_REQUIRE_PEERS:-}" ]; then
		fail "$* (REQ_MTLS_REQUIRE_PEERS is set, so this is an error)"
	fi
	say "SKIP: $* (set REQ_MTLS_REQUIRE_PEERS=1 to make this an error)"
	exit 0
}
elapsed() { echo "$(($(date +%s) - START))s"; }
PASSED=0
passed() { PASSED=$((PASSED + 1)); say "ok: $*"; }

[ "$(id -u)" = 0 ] || skip "needs root (rootful podman, debootstrap)"
for cmd in podman runc podman-compose go setsid flock; do
	command -v "$cmd" >/dev/null || skip "$cmd not found (Debian: apt-get install podman runc podman-compose debootstrap)"
done

# The long steps run in a process group of their own, waited for in the
# background, so that a signal reaches the trap at once and the cleanup
# can end the whole group (podman and what it started).
CHILD=
run() {
	setsid "$@" &
	CHILD=$!
	local status=0
	wait "$CHILD" || status=$?
	CHILD=
	return "$status"
}

WORK=$(mktemp -d /tmp/req-mtls-docker-test.XXXXXX)
# The script's own output, for the cleanup: a signal can arrive while a
# step's output goes to a log file.
exec 7>&1 8>&2
cleanup() {
	local status=$? ids i
	set +e
	trap - INT TERM
	exec 1>&7 2>&8
	cd /
	if [ -n "$CHILD" ]; then
		kill -TERM -- "-$CHILD" 2>/dev/null
		for i in $(seq 1 50); do kill -0 "$CHILD" 2>/dev/null || break; sleep 0.2; done
		kill -KILL -- "-$CHILD" 2>/dev/null
		wait "$CHILD" 2>/dev/null
	fi
	if [ -n "${CONTAINERS_CONF:-}" ]; then
		ids=$(podman ps -aq --filter "label=io.podman.compose.project=$PROJECT" 2>/dev/null)
		if [ -n "$ids" ]; then
			# shellcheck disable=SC2086
			podman rm -f -t 2 $ids >/dev/null 2>&1
			say "removed containers: ${ids//$'\n'/ }"
		fi
		# Working containers of an interrupted build.
		ids=$(podman ps -a --external --format '{{.ID}} {{.Status}}' 2>/dev/null | awk '$2 == "Storage" {print $1}')
		if [ -n "$ids" ]; then
			# shellcheck disable=SC2086
			podman rm -f $ids >/dev/null 2>&1
			say "removed build containers: ${ids//$'\n'/ }"
		fi
		for i in $(podman network ls -q --filter "label=io.podman.compose.project=$PROJECT" 2>/dev/null); do
			podman network rm -f "$i" >/dev/null 2>&1 && say "removed network $i"
		done
	fi
	rm -rf --one-file-system "$WORK"
	if [ "$status" = 0 ]; then
		say "PASS ($(elapsed))"
		echo "docker-test: $PASSED passed, 0 failed"
	else
		say "FAIL (status $status, $(elapsed))" >&2
		echo "docker-test: $PASSED passed, 1 failed"
	fi
	exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# --- Podman's configuration, private to this test: its own storage (the
# cache), runc, the ulimits this sandbox allows, docker.io for short names.
mkdir -p "$CACHE" "$RUNROOT"
exec 9>"$CACHE/lock"
flock -w 900 9 || fail "another docker-test holds $CACHE/lock"
cat >"$WORK/containers.conf" <<EOF
[containers]
default_ulimits = ["nofile=1024:1024", "nproc=1024:1024"]
[engine]
runtime = "runc"
events_logger = "file"
tmp_dir = "$RUNROOT/libpod"
EOF
cat >"$WORK/storage.conf" <<EOF
[storage]
driver = "overlay"
graphroot = "$CACHE/storage"
runroot = "$RUNROOT/storage"
EOF
cat >"$WORK/registries.conf" <<'EOF'
unqualified-search-registries = ["docker.io"]
short-name-mode = "permissive"
EOF
export CONTAINERS_CONF=$WORK/containers.conf
export CONTAINERS_STORAGE_CONF=$WORK/storage.conf
export CONTAINERS_REGISTRIES_CONF=$WORK/registries.conf
say "podman $(podman version --format '{{.Client.Version}}'), $(runc --version | head -1), podman-compose $(podman-compose version 2>/dev/null | sed -n 's/^podman-compose[a-z]* version *//p' | head -1)"

# --- The copy of the working tree, every mtime set to one value: the layer
# cache then follows the contents alone (a fresh clone would otherwise miss
# it at COPY . . every time).
CTX=$WORK/ctx
mkdir -p "$CTX"
if git -C "$ROOT" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
	(cd "$ROOT" && git ls-files -z --cached --others --exclude-standard |
		while IFS= read -r -d '' f; do [ -e "$f" ] && printf '%s\0' "$f"; done |
		tar --null -T - -cf -) | tar -C "$CTX" -xf -
else
	tar -C "$ROOT" --exclude=./.git --exclude=./bin --exclude=./testdata -cf - . | tar -C "$CTX" -xf -
fi
rm -rf "$CTX/testdata/certs"
find "$CTX" -exec touch -h -d @946684800 {} +
cd "$CTX"

# --- The build base: the Dockerfile's FROM image that is neither scratch
# nor an earlier stage, and the stage built on it.
BASE=$(awk 'toupper($1) == "FROM" {
		i = 2; while ($i ~ /^--/) i++
		if ($i != "scratch" && !($i in stage)) print $i
		if (toupper($(i + 1)) == "AS") stage[$(i + 2)] = 1
	}' Dockerfile | sort -u)
[ "$(printf '%s\n' "$BASE" | wc -l)" = 1 ] || fail "expected one base image in Dockerfile, found: $BASE"
BUILD_STAGE=$(awk -v base="$BASE" 'toupper($1) == "FROM" {
		i = 2; while ($i ~ /^--/) i++
		if ($i == base && toupper($(i + 1)) == "AS") { print $(i + 2); exit }
	}' Dockerfile)
[[ $BASE =~ ^golang:([0-9]+\.[0-9]+)(\.[0-9]+)?-([a-z]+)$ ]] ||
	fail "no stand-in recipe for base image $BASE (expected golang:X.Y-SUITE)"
GO_WANT=go${BASH_REMATCH[1]}${BASH_REMATCH[2]}
SUITE=${BASH_REMATCH[3]}
GO_HAVE=$(go env GOVERSION)
case $GO_HAVE in
"$GO_WANT" | "$GO_WANT".*) ;;
*) skip "the Dockerfile builds on $BASE but this machine's Go is $GO_HAVE" ;;
esac
BASE_REF=docker.io/library/$BASE
ARCH=$(dpkg --print-architecture 2>/dev/null || go env GOARCH)
BASE_KEY="recipe=1 suite=$SUITE go=$GO_HAVE arch=$ARCH"

debian_mirror() {
	if [ -n "${REQ_MTLS_DEBIAN_MIRROR:-}" ]; then echo "$REQ_MTLS_DEBIAN_MIRROR"; return; fi
	local m
	# A deb822 stanza (.sources) for the suite's main component, else a
	# one-line entry (.list), else Debian's redirector.
	m=$(awk -v suite="$SUITE" '
		BEGIN { RS = ""; FS = "\n" }
		{ types = uris = suites = comps = ""
		  for (i = 1; i <= NF; i++) {
			split($i, kv, ":"); k = tolower(kv[1]); v = substr($i, length(kv[1]) + 2); sub(/^[ \t]*/, "", v)
			if (k == "types") types = " " v " "; if (k == "uris") uris = v
			if (k == "suites") suites = " " v " "; if (k == "components") comps = " " v " " }
		  if (types ~ / deb / && suites ~ (" " suite " ") && comps ~ / main /) { split(uris, u, " "); print u[1]; exit } }' \
		/dev/null /etc/apt/sources.list.d/*.sources 2>/dev/null)
	[ -n "$m" ] || m=$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null |
		sed 's/\[[^]]*\]//' | awk -v suite="$SUITE" '$1 == "deb" && $3 == suite { print $2; exit }')
	echo "${m:-http://deb.debian.org/debian}"
}

have_key=$(podman image inspect --format '{{index .Config.Labels "org.req-mtls.docker-test.base"}}' "$BASE_REF" 2>/dev/null || true)
if [ "$have_key" = "$BASE_KEY" ] && [ -z "${REQ_MTLS_DOCKER_REBASE:-}" ]; then
	say "base $BASE_REF: cached ($BASE_KEY)"
else
	command -v debootstrap >/dev/null || skip "debootstrap not found, and no cached $BASE_REF"
	MIRROR=$(debian_mirror)
	say "base $BASE_REF: debootstrap --variant=minbase $SUITE from $MIRROR, Go from $(go env GOROOT) ($GO_HAVE)"
	ROOTFS=$WORK/rootfs
	run timeout 600 debootstrap --variant=minbase --include=ca-certificates --arch="$ARCH" \
		"$SUITE" "$ROOTFS" "$MIRROR" >"$WORK/debootstrap.log" 2>&1 ||
		{ tail -20 "$WORK/debootstrap.log" >&2; fail "debootstrap failed"; }
	rm -rf "$ROOTFS"/var/lib/apt/lists/* "$ROOTFS"/var/cache/apt/* "$ROOTFS"/usr/share/doc/* "$ROOTFS"/usr/share/man/*
	mkdir -p "$ROOTFS/usr/local/go" "$ROOTFS/go/bin" "$ROOTFS/go/src"
	cp -a "$(go env GOROOT)/." "$ROOTFS/usr/local/go/"
	# The official image's settings: PATH, GOPATH, GOTOOLCHAIN, WORKDIR.
	tar --numeric-owner -C "$ROOTFS" -cf - . | podman import \
		--change "ENV PATH=/go/bin:/usr/local/go/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" \
		--change "ENV GOLANG_VERSION=${GO_HAVE#go}" \
		--change "ENV GOTOOLCHAIN=local" \
		--change "ENV GOPATH=/go" \
		--change "WORKDIR /go" \
		--change 'CMD ["bash"]' \
		--change "LABEL org.req-mtls.docker-test.base=\"$BASE_KEY\"" \
		--message "stand-in for $BASE made by scripts/docker-test.sh" \
		- "$BASE_REF" >"$WORK/import.log" 2>&1 || { cat "$WORK/import.log" >&2; fail "podman import failed"; }
	rm -rf --one-file-system "$ROOTFS"
	say "base $BASE_REF: made ($(elapsed))"
fi

# --- Modules: this machine's module cache, filled by go mod download (from
# the Go module proxy for what is missing), read-only in the build as a
# file:// GOPROXY. The build itself has no network.
go mod download
MODPROXY=$(go env GOMODCACHE)/cache/download
PYTHON=$(sed -n '1s/^#! *//p' "$(command -v podman-compose)")
case $PYTHON in /*python*) ;; *) PYTHON=python3 ;; esac
PC=("$PYTHON" "$ROOT/scripts/docker/podman-compose.py" -p "$PROJECT" -f "$CTX/docker-compose.yml")
BUILD_OPTS=(--network=none -v "$MODPROXY:/gomodproxy:ro")
BUILD_ARG=GOPROXY=file:///gomodproxy

say "build: podman-compose build (the server and client services)"
run timeout 900 "${PC[@]}" --podman-build-args="$(printf '%q ' "${BUILD_OPTS[@]}")" build --build-arg "$BUILD_ARG" >"$WORK/build.log" 2>&1 ||
	{ tail -40 "$WORK/build.log" >&2; fail "podman-compose build failed"; }
grep '^podman build' "$WORK/build.log" | sed "s|$MODPROXY|\$GOMODCACHE/cache/download|; s/^/  /"
say "build: $(grep -c 'STEP [0-9]*/[0-9]*:' "$WORK/build.log") steps, $(grep -c '^--> Using cache' "$WORK/build.log") from the layer cache ($(elapsed))"
for svc in server client; do
	user=$(podman image inspect --format '{{.Config.User}}' "${PROJECT}_$svc")
	size=$(podman image inspect --format '{{.Size}}' "${PROJECT}_$svc")
	say "image ${PROJECT}_$svc: user $user, $((size / 1000000)) MB"
	[ "$user" = 65532:65532 ] || fail "image ${PROJECT}_$svc runs as '$user', not 65532:65532"
done
passed "podman-compose build: server and client images, user 65532:65532"
BUILD=(podman build "${BUILD_OPTS[@]}" --build-arg "$BUILD_ARG")
if [ -n "$BUILD_STAGE" ]; then
	# From the layer cache; the tag keeps the build stage (modules, compiled
	# binaries) from the prune at the end.
	run "${BUILD[@]}" --target "$BUILD_STAGE" -t "${PROJECT}_$BUILD_STAGE-stage" . >"$WORK/stage.log" 2>&1 ||
		{ tail -20 "$WORK/stage.log" >&2; fail "build stage $BUILD_STAGE failed"; }
fi
run timeout 900 "${BUILD[@]}" --target artefacts --output "type=local,dest=$WORK/artefacts" . >"$WORK/artefacts.log" 2>&1 ||
	{ tail -20 "$WORK/artefacts.log" >&2; fail "podman build --target artefacts failed"; }
for b in client server gencert; do
	[ "$(head -c 4 "$WORK/artefacts/$b" 2>/dev/null | od -An -c | tr -d ' ')" = '177ELF' ] ||
		fail "artefacts: no binary $b in the output"
done
passed "build --target artefacts --output type=local: $(cd "$WORK/artefacts" && echo *)"

# --- Certificates as `make gen-cert` writes them (keys 0600), owned by an
# unprivileged user; the services run as the keys' owner, as the make
# docker-* targets arrange (they pass the ids of whoever runs make, who
# owns the keys that make gen-cert wrote).
go build -o "$WORK/gencert" ./cmd/gencert
"$WORK/gencert" -dir testdata/certs >/dev/null
chown -R "$CERT_OWNER" testdata/certs
REQ_MTLS_USER=$(stat -c %u:%g testdata/certs/server.key)
export REQ_MTLS_USER
say "certificates: $(stat -c '%A %u:%g %n' testdata/certs/server.key), REQ_MTLS_USER=$REQ_MTLS_USER"

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; }
port_open && fail "something already listens on 127.0.0.1:$PORT; stop it first"

say "up: podman-compose up -d server"
run "${PC[@]}" up -d --no-build server >"$WORK/up.log" 2>&1 ||
	{ cat "$WORK/up.log" >&2; fail "podman-compose up failed"; }
grep '^podman run' "$WORK/up.log" | sed "s|$CTX|\$CTX|g; s/^/  /"
SERVER=${PROJECT}_server_1
for _ in $(seq 1 100); do
	port_open && break
	[ "$(podman inspect --format '{{.State.Running}}' "$SERVER" 2>/dev/null)" = true ] || break
	sleep 0.2
done
if ! port_open; then
	podman logs "$SERVER" >&2 || true
	fail "the server container is not listening on localhost:$PORT"
fi
say "server container $SERVER: running as $(podman inspect --format '{{.Config.User}}' "$SERVER"), listening on localhost:$PORT"

client() { # NAME ARGS...: run the client service once; output in $WORK/NAME.out
	local name=$1
	shift
	# --no-deps: the client has none, and 1.0.3 would otherwise run `up`
	# for every service first.
	run timeout 120 "${PC[@]}" run --rm --no-deps -T client \
		-cert /testdata/certs/client.crt -key /testdata/certs/client.key \
		-server-cacert /testdata/certs/rootCA.crt "$@" --connect "https://localhost:$PORT/debug" \
		>"$WORK/$name.out" 2>&1 || { cat "$WORK/$name.out" >&2; fail "client ($name) failed"; }
	# podman-compose echoes its podman commands and their exit codes.
	grep -v -E '^(podman run|exit code:|\[|using podman version|podman-compose|podman version|\*\*)' "$WORK/$name.out" | sed 's/^/  | /'
}

say "run: podman-compose run --rm client ... -tlsflags 80 --connect https://localhost:$PORT/debug"
client flagged -tlsflags 80
grep -q '^Client sent TLS Flags: \[80\]' "$WORK/flagged.out" || fail "flagged: the server did not see flag 80"
grep -q '^Cert validated: true' "$WORK/flagged.out" || fail "flagged: no 'Cert validated: true'"
passed "flag 80 from the client container: Cert validated: true"

say "run: the same without -tlsflags (no certificate may be asked for)"
client unflagged
grep -q '^Client cert requested: false' "$WORK/unflagged.out" || fail "unflagged: expected 'Client cert requested: false'"
passed "no flag: Client cert requested: false"

say "server log:"
podman logs "$SERVER" 2>&1 | tail -n 5 | sed 's/^/  | /'
run "${PC[@]}" down -t 2 >"$WORK/down.log" 2>&1 || { cat "$WORK/down.log" >&2; fail "podman-compose down failed"; }
[ -z "$(podman ps -aq --filter "label=io.podman.compose.project=$PROJECT")" ] || fail "containers left after podman-compose down"
passed "podman-compose down: no containers left"

# Build cache: untagged leaf images (earlier sources' build stages,
# replaced service images) go; this run's images are all tagged.
podman image prune -f >/dev/null 2>&1 || true
say "cache $CACHE: $(du -sh "$CACHE" 2>/dev/null | cut -f1)"
