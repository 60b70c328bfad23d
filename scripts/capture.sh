#!/usr/bin/env bash
# make capture: record one flagged request on loopback with tshark, embed the
# TLS secrets in the capture, and write it to $1 (a .pcapng). Opened in
# Wireshark, the capture shows the tls_flags extension, the
# CertificateRequest, and the decrypted HTTP/2 GET /debug with its answer.
#
# The server listens on 127.0.0.1:$CAPTURE_PORT, 8775 unless set; port 443
# is used only when asked for (CAPTURE_PORT=443, as root). Wireshark decodes
# port 443 as TLS by its port number. On 8775 it relies on its TLS heuristic
# (tls_tcp, on by default: Debian 12's tshark 4.0 decodes such a capture
# unaided); with heuristics off it shows plain TCP until "Decode As...":
# TCP port 8775 as TLS (tshark: -d tcp.port==8775,tls). The committed
# assets/demonstration-capture.pcapng was recorded on 443.
set -euo pipefail

out=${1:?usage: capture.sh OUT.pcapng}
bin=${BIN:-bin}
for tool in tshark editcap; do
	command -v "$tool" >/dev/null || { echo "capture: $tool not found; install Debian's tshark package" >&2; exit 1; }
done
port=${CAPTURE_PORT:-8775}
case $port in
'' | *[!0-9]*) echo "capture: CAPTURE_PORT must be a port number, not '$port'" >&2; exit 2 ;;
esac

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
for _ in $(seq 1 100); do
	grep -q 'msg=listening' "$work/server.log" && break
	kill -0 "${pids[0]}" 2>/dev/null || break
	sleep 0.1
done
grep -q 'msg=listening' "$work/server.log" || {
	cat "$work/server.log" >&2
	echo "capture: the server could not listen on 127.0.0.1:$port; choose another port with CAPTURE_PORT=N" >&2
	exit 1
}

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
echo "capture: wrote $out ($(wc -c <"$out") bytes, TLS secrets embedded, TCP port $port)"
if [ "$port" != 443 ]; then
	echo "capture: if Wireshark shows only TCP, Decode As... TCP port $port as TLS (tshark: -d tcp.port==$port,tls)"
fi
