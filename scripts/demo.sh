#!/usr/bin/env bash
# make demo: a request-mTLS server on a free loopback port, then requests
# with and without flag 80. Exits non-zero when anything is not as expected,
# and leaves no process behind.
set -euo pipefail

bin=${BIN:-bin}
work=$(mktemp -d "${TMPDIR:-/tmp}/req-mtls-demo.XXXXXX")
server_pid=
cleanup() {
	if [ -n "$server_pid" ] && kill -0 "$server_pid" 2>/dev/null; then
		kill "$server_pid" 2>/dev/null || true
		wait "$server_pid" 2>/dev/null || true
	fi
	rm -rf "$work"
}
trap cleanup EXIT INT TERM

fail() { echo "demo: FAILED: $*" >&2; exit 1; }
step() { printf '\n== %s\n' "$*"; }

step "certificates (in a scratch directory)"
"$bin/gencert" -dir "$work/certs" | sed 's/^/   /'
certs=$work/certs

step "server on a free loopback port"
"$bin/server" -cert "$certs/server.crt" -key "$certs/server.key" \
	-client-cacert "$certs/rootCA.crt" -listen-addr 127.0.0.1:0 2>"$work/server.log" &
server_pid=$!
addr=
for _ in $(seq 1 100); do
	addr=$(sed -n 's/.*msg=listening addr=\([^ ]*\).*/\1/p' "$work/server.log" | head -n1)
	[ -n "$addr" ] && break
	kill -0 "$server_pid" 2>/dev/null || { cat "$work/server.log" >&2; fail "server exited"; }
	sleep 0.1
done
[ -n "$addr" ] || fail "server did not start"
url=https://$addr/debug
echo "   listening on $addr"

step "client WITH flag 80 and a certificate: the server asks for it, and checks it"
echo "   \$ client -tlsflags 80 -cert client.crt -key client.key -server-cacert rootCA.crt -connect $url"
flagged=$("$bin/client" -tlsflags 80 -cert "$certs/client.crt" -key "$certs/client.key" \
	-server-cacert "$certs/rootCA.crt" -connect "$url") || fail "flagged request"
echo "$flagged" | sed '/^$/d; s/^/   /'
grep -qx 'Client cert requested: true' <<<"$flagged" || fail "flagged client was not asked for a certificate"
grep -qx 'Cert validated: true' <<<"$flagged" || fail "flagged client's certificate did not validate"

step "client WITHOUT the flag: no CertificateRequest, like any ordinary client"
echo "   \$ client -cert client.crt -key client.key -server-cacert rootCA.crt -connect $url"
plain=$("$bin/client" -cert "$certs/client.crt" -key "$certs/client.key" \
	-server-cacert "$certs/rootCA.crt" -connect "$url") || fail "unflagged request"
echo "$plain" | sed '/^$/d; s/^/   /'
grep -qx 'Client cert requested: false' <<<"$plain" || fail "unflagged client was asked for a certificate"

if command -v curl >/dev/null 2>&1; then
	step "curl (a client that cannot send flags): not asked either"
	echo "   \$ curl --cacert rootCA.crt $url"
	viacurl=$(curl -sS --cacert "$certs/rootCA.crt" "$url") || fail "curl request"
	echo "$viacurl" | sed 's/^/   /'
	grep -qx 'Client cert requested: false' <<<"$viacurl" || fail "curl was asked for a certificate"
else
	step "curl not installed: skipped"
fi

kill "$server_pid"
wait "$server_pid" 2>/dev/null || true
server_pid=
step "server stopped; its log:"
sed 's/^/   /' "$work/server.log"
printf '\ndemo: OK: flag 80 brought a CertificateRequest; without it, none came.\n'
