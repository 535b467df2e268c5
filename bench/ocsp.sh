#!/usr/bin/env bash
# OCSP responder throughput: cps-trust against `openssl ocsp` (P-256 signer), same machine, same
# run, same kind of request (one SHA-1 CertID, no nonce, POST). h2load (nghttp2-client) drives
# both; p50/p99 come from h2load's per-request log.
#   N=20000 C=4 bench/ocsp.sh
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
N=${N:-20000}
C=${C:-4}
W=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill -TERM -- "$p" 2>/dev/null || true; done; sleep 0.5; rm -rf "$W"; }
trap cleanup EXIT

cd "$repo"
cargo build -q --release -p cps-trust
bin="$repo/target/release/cps-trust"
port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }
HTTP=127.0.0.1:$(port); HTTPS=127.0.0.1:$(port); OSSL_PORT=$(port)

# --- cps-trust ---------------------------------------------------------------------------------
"$bin" --home "$W/home" init --time-source declared --public-url "http://$HTTP" >/dev/null
sed -i "s/127.0.0.1:8080\"/$HTTP\"/; s/127.0.0.1:8443\"/$HTTPS\"/" "$W/home/cps-trust.toml"
"$bin" --home "$W/home" serve >"$W/serve.log" 2>&1 & pids+=($!)
for _ in $(seq 100); do curl -sf "http://$HTTP/health" >/dev/null && break; sleep 0.1; done
openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /CN=x -keyout "$W/ee.key" -out "$W/ee.csr" 2>/dev/null
"$bin" --home "$W/home" cert issue --profile org-tls-client --csr "$W/ee.csr" --holder bench \
  --org-name Bench --structure-id 318751275100020 --cn bench-node --state "Paris (75)" -o "$W/ee.pem" >/dev/null
openssl ocsp -issuer "$W/home/ca/organisations.pem" -cert "$W/ee.pem" -no_nonce -reqout "$W/req-ours.der" >/dev/null

# --- openssl ocsp (PEERS.md §3), P-256 CA and delegated P-256 signer -----------------------------
O="$W/ossl"; mkdir -p "$O/newcerts"; : >"$O/index.txt"; echo 1000 >"$O/serial"
cat >"$O/ca.cnf" <<CNF
[ca]
default_ca = CA_default
[CA_default]
dir = $O
database = \$dir/index.txt
new_certs_dir = \$dir/newcerts
serial = \$dir/serial
default_md = sha256
default_days = 30
policy = policy_any
unique_subject = no
[policy_any]
commonName = supplied
[v3_ca]
basicConstraints = critical,CA:TRUE
keyUsage = critical,keyCertSign,cRLSign
[v3_ee]
basicConstraints = CA:FALSE
keyUsage = critical,digitalSignature
[v3_ocsp]
basicConstraints = CA:FALSE
keyUsage = critical,digitalSignature
extendedKeyUsage = critical,OCSPSigning
noCheck = ignored
CNF
(cd "$O"
 openssl req -x509 -new -config ca.cnf -extensions v3_ca -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout ca.key -out ca.crt -days 30 -subj "/CN=Bench CA" 2>/dev/null
 openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout ee.key -out ee.csr -subj "/CN=bench-ee" 2>/dev/null
 openssl ca -batch -notext -config ca.cnf -cert ca.crt -keyfile ca.key -extensions v3_ee -in ee.csr -out ee.crt 2>/dev/null
 openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout ocsp.key -out ocsp.csr -subj "/CN=Bench OCSP" 2>/dev/null
 openssl ca -batch -notext -config ca.cnf -cert ca.crt -keyfile ca.key -extensions v3_ocsp -in ocsp.csr -out ocsp.crt 2>/dev/null
 openssl ocsp -issuer ca.crt -cert ee.crt -no_nonce -reqout req-openssl.der >/dev/null)
(cd "$O" && exec openssl ocsp -index index.txt -port "$OSSL_PORT" -rsigner ocsp.crt -rkey ocsp.key -CA ca.crt -ndays 1 -ignore_err </dev/null >"$W/openssl.log" 2>&1) & pids+=($!)
# Readiness = a real request (a bare TCP probe wedges openssl ocsp at 100 % CPU).
for _ in $(seq 100); do
  curl -sf --data-binary @"$O/req-openssl.der" -H 'Content-Type: application/ocsp-request' "http://127.0.0.1:$OSSL_PORT/" -o /dev/null && break
  sleep 0.1
done

run() { # name url request [extra h2load args...]
  local name=$1 url=$2 req=$3; shift 3
  local log="$W/$name.log"
  local out; out=$(h2load --h1 -n "$N" -c "$C" -d "$req" -H 'Content-Type: application/ocsp-request' --log-file="$log" "$@" "$url" 2>&1)
  local rps; rps=$(echo "$out" | sed -n 's/.*finished in [^,]*, \([0-9.]*\) req\/s.*/\1/p')
  local ok; ok=$(echo "$out" | sed -n 's/.*status codes: \([0-9]*\) 2xx.*/\1/p')
  local pct; pct=$(awk '{print $3}' "$log" | sort -n | awk '{a[NR]=$1} END {printf "%.2f ms | %.2f ms", a[int(NR*0.5)]/1000, a[int(NR*0.99)]/1000}')
  printf '| %s | %s | %.0f | %s | %s/%s |\n' "$name" "$C" "$rps" "$pct" "$ok" "$N"
}

echo "| responder | concurrent clients | requests/s | p50 | p99 | 2xx |"
echo "|---|---|---|---|---|---|"
run "cps-trust, keep-alive" "http://$HTTP/ocsp" "$W/req-ours.der"
run "cps-trust, new connection per request" "http://$HTTP/ocsp" "$W/req-ours.der" -H 'Connection: close'
run "openssl ocsp (closes every connection)" "http://127.0.0.1:$OSSL_PORT/" "$O/req-openssl.der"
