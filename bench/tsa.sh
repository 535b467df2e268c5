#!/usr/bin/env bash
# Time-stamping authority throughput: `POST /tsa` of the running appliance (P-256 TSA key in
# SoftHSM2) driven by h2load, next to SoftHSM2's raw signing rate for the same key (bench/p11raw.c,
# one session per thread) and to `openssl ts -reply` run in a loop with a software P-256 key.
# Same machine, same run.
#   N=5000 C=4 bench/tsa.sh                 # P-256 TSA key
#   ALG=rsa2048 N=2000 C=4 bench/tsa.sh     # RSA-2048 TSA key (openssl's key is then RSA-2048 too)
#   PERF=1 …                                # also a perf profile of the appliance at C clients
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
N=${N:-5000}
C=${C:-4}
SECS=${SECS:-3}
LOOP=${LOOP:-300}
ALG=${ALG:-p256}
case "$ALG" in p256) MECH=ecdsa; OKEY=(ec -pkeyopt ec_paramgen_curve:P-256) ;; rsa2048) MECH=rsa; OKEY=(rsa:2048) ;; *) echo "ALG p256|rsa2048"; exit 2 ;; esac
W=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill -TERM -- "$p" 2>/dev/null || true; done; sleep 0.5; rm -rf "$W"; }
trap cleanup EXIT

cd "$repo"
cargo build -q --release -p cps-trust
bin="$repo/target/release/cps-trust"
cc -O2 -pthread -I/usr/include/p11-kit-1 bench/p11raw.c -ldl -o "$W/p11raw"
port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }
HTTP=127.0.0.1:$(port); HTTPS=127.0.0.1:$(port); SYSLOG=127.0.0.1:$(port); NTP=127.0.0.1:$(port)

# --- cps-trust -----------------------------------------------------------------------------------
"$bin" --home "$W/home" init --time-source declared --public-url "http://$HTTP" >/dev/null
sed -i "s/127.0.0.1:8080\"/$HTTP\"/; s/127.0.0.1:8443\"/$HTTPS\"/; s/^syslog_tls = .*/syslog_tls = \"$SYSLOG\"/; s/^ntp = .*/ntp = \"$NTP\"/" "$W/home/cps-trust.toml"
python3 - "$W/home/cps-trust.toml" "$ALG" <<'PY'
import sys
p, alg = sys.argv[1], sys.argv[2]
lines, section = open(p).read().split("\n"), None
for i, l in enumerate(lines):
    if l.startswith("["):
        section = l
    elif section == "[tsa]" and l.startswith("algorithm = "):
        lines[i] = f'algorithm = "{alg}"'
open(p, "w").write("\n".join(lines))
PY
"$bin" --home "$W/home" serve >"$W/serve.log" 2>&1 & serve=$!; pids+=($serve)
for _ in $(seq 300); do curl -sf "http://$HTTP/health" >/dev/null && break; sleep 0.1; done
echo "data to time-stamp" >"$W/data.txt"
openssl ts -query -data "$W/data.txt" -sha256 -cert -out "$W/q.tsq" 2>/dev/null
curl -sf -H 'Content-Type: application/timestamp-query' --data-binary @"$W/q.tsq" "http://$HTTP/tsa" -o "$W/r.tsr"
openssl ts -reply -in "$W/r.tsr" -text 2>/dev/null | grep -q 'Status: Granted' || { echo "no token"; cat "$W/serve.log"; exit 1; }

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
hz=$(getconf CLK_TCK)
run() { # name conns
  local name=$1 conns=$2 log="$W/h2load-$2.log"
  local t0; t0=$(cpu_ticks "$serve")
  if [ "${PERF:-0}" = 1 ] && [ "$conns" != 1 ]; then perf record -F 999 -g -p "$serve" -o "$W/perf.data" 2>/dev/null & perf=$!; fi
  local out; out=$(h2load --h1 -n "$N" -c "$conns" -d "$W/q.tsq" -H 'Content-Type: application/timestamp-query' --log-file="$log" "http://$HTTP/tsa" 2>&1)
  local t1; t1=$(cpu_ticks "$serve")
  if [ -n "${perf:-}" ]; then kill -INT "$perf"; wait "$perf" || true; perf=; fi
  local rps; rps=$(echo "$out" | sed -n 's/.*finished in [^,]*, \([0-9.]*\) req\/s.*/\1/p')
  local ok; ok=$(echo "$out" | sed -n 's/.*status codes: \([0-9]*\) 2xx.*/\1/p')
  local pct; pct=$(awk '{print $3}' "$log" | sort -n | awk '{a[NR]=$1} END {printf "%.2f ms | %.2f ms", a[int(NR*0.5)]/1000, a[int(NR*0.99)]/1000}')
  local cpu; cpu=$(awk -v a="$t0" -v b="$t1" -v hz="$hz" -v n="$N" 'BEGIN {printf "%.0f", (b - a) / hz / n * 1e6}')
  printf '| %s | %s | %.0f | %s | %s µs | %s/%s |\n' "$name" "$conns" "$rps" "$pct" "$cpu" "$ok" "$N"
}
echo "| path | concurrent clients | tokens/s | p50 | p99 | appliance CPU per token | 2xx |"
echo "|---|---|---|---|---|---|---|"
run "POST /tsa, keep-alive" 1
run "POST /tsa, keep-alive" "$C"

# --- SoftHSM2 raw signing rate for the same key ----------------------------------------------------
pin=$(cat "$W/home/secrets/hsm-user.pin")
echo
if [ "${PERF:-0}" = 1 ]; then perf report -i "$W/perf.data" --no-children -g none --percent-limit 1 --sort dso,symbol 2>/dev/null | grep -v '^#' | grep -v '^$' | head -40; fi
echo "| SoftHSM2 raw (p11raw.c, key \"tsa\", $ALG) | threads | signatures/s |"
echo "|---|---|---|"
for t in 1 2; do
  r=$(SOFTHSM2_CONF="$W/home/softhsm2.conf" "$W/p11raw" /usr/lib/softhsm/libsofthsm2.so cps-trust "$pin" tsa "$MECH" "$t" "$SECS")
  printf '| | %s | %.0f |\n' "$t" "$r"
done

# --- openssl ts -reply in a loop, software P-256 key --------------------------------------------
O="$W/ossl"; mkdir -p "$O"; echo 01 >"$O/serial"
(cd "$O"
 openssl req -x509 -newkey "${OKEY[@]}" -nodes -keyout ca.key -out ca.pem -subj /CN=Bench-CA -days 30 2>/dev/null
 openssl req -new -newkey "${OKEY[@]}" -nodes -keyout tsa.key -out tsa.csr -subj /CN=Bench-TSA 2>/dev/null
 printf 'extendedKeyUsage=critical,timeStamping\nkeyUsage=critical,digitalSignature\n' >ext.cnf
 openssl x509 -req -in tsa.csr -CA ca.pem -CAkey ca.key -set_serial 2 -days 30 -extfile ext.cnf -out tsa.pem 2>/dev/null)
cat >"$O/ts.cnf" <<CNF
[tsa]
default_tsa = t
[t]
serial = $O/serial
signer_cert = $O/tsa.pem
certs = $O/tsa.pem
signer_key = $O/tsa.key
signer_digest = sha256
default_policy = 1.3.6.1.4.1.32473.4.1
digests = sha256, sha384, sha512
accuracy = secs:1
ess_cert_id_alg = sha256
CNF
loop() { for _ in $(seq "$1"); do openssl ts -reply -config "$O/ts.cnf" -queryfile "$W/q.tsq" -out /dev/null 2>/dev/null; done; }
echo
echo "| openssl ts -reply in a loop (software $ALG) | parallel loops | tokens/s |"
echo "|---|---|---|"
for p in 1 2; do
  s=$(date +%s.%N)
  lp=(); for _ in $(seq "$p"); do loop "$LOOP" & lp+=($!); done; wait "${lp[@]}"
  e=$(date +%s.%N)
  awk -v s="$s" -v e="$e" -v n="$((LOOP * p))" -v p="$p" 'BEGIN {printf "| | %s | %.0f |\n", p, n / (e - s)}'
done
echo
echo "load average: $(cut -d' ' -f1-3 /proc/loadavg)"
