#!/usr/bin/env bash
# make capture: record one flagged request on loopback with tshark, embed the
# TLS secrets in the capture, and write it to $1 (a .pcapng). Opened in
# Wireshark, the capture shows the tls_flags extension, the
# CertificateRequest, and the decrypted HTTP/2 GET /debug with its answer.
set -euo pipefail

out=${1:?usage: capture.sh OUT.pcapng}
bin=${BIN:-bin}
for tool in tshark editcap; do
	command -v "$tool" >/dev/null || { echo "capture: $tool not found; install Debian's tshark package" >&2; exit 1; }
done
# Port 443 lets Wireshark decode TLS without a "Decode As" rule; it needs
# root. Otherwise 8775, and Wireshark needs: Decode As, TCP port 8775, TLS.
if [ -z "${CAPTURE_PORT:-}" ]; then
	if [ "$(id -u)" = 0 ]; then CAPTURE_PORT=443; else CAPTURE_PORT=8775; fi
fi
port=$CAPTURE_PORT

work=$(mktemp -d "${TMPDIR:-/tmp}/req-mtls-capture.XXXXXX")
pids=()
cleanup() {
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
	rm -rf "$work"
}
trap cleanup EXIT INT TERM

"$bin/gencert" -dir "$work/certs" >/dev/null
certs=$work/certs
"$bin/server" -cert "$certs/server.crt" -key "$certs/server.key" -client-cacert "$certs/rootCA.crt" \
	-listen-addr "127.0.0.1:$port" 2>"$work/server.log" &
pids+=($!)
for _ in $(seq 1 100); do grep -q 'msg=listening' "$work/server.log" && break; sleep 0.1; done
grep -q 'msg=listening' "$work/server.log" || { cat "$work/server.log" >&2; exit 1; }

tshark -q -i lo -f "tcp port $port" -w "$work/raw.pcapng" 2>"$work/tshark.log" &
pids+=($!)
for _ in $(seq 1 100); do grep -q 'Capturing on' "$work/tshark.log" && break; sleep 0.1; done
sleep 0.5

SSLKEYLOGFILE=$work/keys.log "$bin/client" -tlsflags 80 -cert "$certs/client.crt" -key "$certs/client.key" \
	-server-cacert "$certs/rootCA.crt" -connect "https://localhost:$port/debug"
sleep 1
kill "${pids[1]}"; wait "${pids[1]}" 2>/dev/null || true

mkdir -p "$(dirname "$out")"
editcap --inject-secrets "tls,$work/keys.log" "$work/raw.pcapng" "$out"
echo "capture: wrote $out ($(wc -c <"$out") bytes, TLS secrets embedded)"
