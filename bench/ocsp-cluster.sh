#!/usr/bin/env bash
# OCSP responder throughput on the sled store vs on PostgreSQL, 1 node vs 2 nodes, same run.
# One `cps-trust serve` on sled, and two nodes (a, b: `cluster join`) sharing a PostgreSQL 15
# started here (Debian's postgresql-15, `fsync = on`, no standby). Each node answers a no-nonce
# request for a certificate it issued from its pre-signed cache; on PostgreSQL every answer first
# checks the store's certificates version (one coalesced read shared by the requests waiting).
# h2load (`--h1`, POST, keep-alive) drives the responders; for "2 nodes" two h2load processes
# share the clients, one per node, in parallel. CPU per request is the utime+stime the server
# processes (and PostgreSQL's postmaster with its backends) used during the row, from
# /proc/<pid>/stat, divided by the requests answered.
#   N=20000 C=4 R=2 bench/ocsp-cluster.sh      # R: rounds of the three rows
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
N=${N:-20000}
C=${C:-4}
R=${R:-2}
W=$(mktemp -d)
chmod 755 "$W"
pgbin=/usr/lib/postgresql/15/bin
pids=()
pg_pid=
cleanup() {
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  [ -n "$pg_pid" ] && kill -INT "$pg_pid" 2>/dev/null || true
  sleep 1
  rm -rf "$W"
}
trap cleanup EXIT

cd "$repo"
# CPS_TRUST_BIN: another build of the appliance (to compare two builds); else this checkout's.
if [ -z "${CPS_TRUST_BIN:-}" ]; then cargo build -q --release -p cps-trust; fi
bin=${CPS_TRUST_BIN:-$repo/target/release/cps-trust}
port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }

# CPU seconds (utime+stime) of process $1, plus its children's (running, and ended+waited for).
cpu_tree() {
  python3 - "$1" <<'PY'
import os, sys
root = int(sys.argv[1]); hz = os.sysconf("SC_CLK_TCK"); t = 0
for p in os.listdir("/proc"):
    if not p.isdigit():
        continue
    try:
        s = open(f"/proc/{p}/stat").read()
    except OSError:
        continue
    f = s[s.rfind(")") + 2:].split()
    ppid, own, children = int(f[1]), int(f[11]) + int(f[12]), int(f[13]) + int(f[14])
    if int(p) == root:
        t += own + children
    elif ppid == root:
        t += own
print(t / hz)
PY
}

# --- PostgreSQL ------------------------------------------------------------------------------
PG_PORT=$(port)
mkdir -p "$W/pg" "$W/pg-sock"
[ "$(id -u)" = 0 ] && chown postgres: "$W/pg" "$W/pg-sock"
as_pg "$pgbin/initdb" -D "$W/pg/data" -U postgres -A trust -E UTF8 --locale=C >/dev/null
as_pg "$pgbin/postgres" -D "$W/pg/data" -p "$PG_PORT" -k "$W/pg-sock" -c listen_addresses=127.0.0.1 \
  -c fsync=on -c synchronous_commit=on >"$W/pg.log" 2>&1 &
for _ in $(seq 100); do as_pg "$pgbin/pg_isready" -q -h 127.0.0.1 -p "$PG_PORT" && break; sleep 0.2; done
pg_pid=$(head -1 "$W/pg/data/postmaster.pid")
as_pg "$pgbin/psql" -h 127.0.0.1 -p "$PG_PORT" -U postgres -qc "CREATE DATABASE cps"
url="postgresql://postgres@127.0.0.1:$PG_PORT/cps"

# --- nodes -----------------------------------------------------------------------------------
set_ports() { # home http https syslog ntp
  sed -i "s/^http = .*/http = \"$2\"/; s/^https = .*/https = \"$3\"/; s/^syslog_tls = .*/syslog_tls = \"$4\"/; s/^ntp = .*/ntp = \"$5\"/" "$1/cps-trust.toml"
}
start() { # home http log -> pid in $started
  "$bin" --home "$1" serve >"$3" 2>&1 & started=$!; pids+=($started)
  for _ in $(seq 300); do curl -sf "http://$2/health" >/dev/null && return 0; sleep 0.1; done
  echo "node $1 did not start; see $3" >&2; exit 1
}
request() { # home http name -> $W/req-name.der (a certificate issued through that node)
  openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /CN=x -keyout "$W/$3.key" -out "$W/$3.csr" 2>/dev/null
  "$bin" --home "$1" cert issue --profile org-tls-client --csr "$W/$3.csr" --holder "bench-$3" \
    --org-name Bench --structure-id 318751275100020 --cn "bench-$3" --state "Paris (75)" -o "$W/$3.pem" >/dev/null
  openssl ocsp -issuer "$1/ca/organisations.pem" -cert "$W/$3.pem" -no_nonce -reqout "$W/req-$3.der" >/dev/null
  # Fill the pre-signed cache.
  curl -sf --data-binary @"$W/req-$3.der" -H 'Content-Type: application/ocsp-request' "http://$2/ocsp" -o /dev/null
}

S_HTTP=127.0.0.1:$(port); S_HTTPS=127.0.0.1:$(port)
"$bin" --home "$W/sled" init --time-source declared --public-url "http://$S_HTTP" >/dev/null
set_ports "$W/sled" "$S_HTTP" "$S_HTTPS" "127.0.0.1:$(port)" "127.0.0.1:$(port)"
start "$W/sled" "$S_HTTP" "$W/sled.log"; sled_pid=$started
request "$W/sled" "$S_HTTP" sled

A_HTTP=127.0.0.1:$(port); A_HTTPS=127.0.0.1:$(port)
"$bin" --home "$W/a" init --time-source declared --public-url "http://$A_HTTP" --store-url "$url" >/dev/null
set_ports "$W/a" "$A_HTTP" "$A_HTTPS" "127.0.0.1:$(port)" "127.0.0.1:$(port)"
B_HTTP=127.0.0.1:$(port)
if grep -q '"cluster"' "$repo/crates/appliance/src/config.rs"; then
  printf '\n[cluster]\nnode_id = "a"\n' >>"$W/a/cps-trust.toml"
  "$bin" --home "$W/b" cluster join --from "$W/a" --node-id b --http "$B_HTTP" \
    --https "127.0.0.1:$(port)" --syslog-tls "127.0.0.1:$(port)" --ntp "127.0.0.1:$(port)" >/dev/null
else
  # A build without the `[cluster]` setting: node b is what `cluster join` copies (the shared
  # files and the configuration), with its own listeners.
  mkdir -p "$W/b"
  for f in softhsm2.conf secrets ca tls xua cps-trust.toml; do [ -e "$W/a/$f" ] && cp -a "$W/a/$f" "$W/b/"; done
  set_ports "$W/b" "$B_HTTP" "127.0.0.1:$(port)" "127.0.0.1:$(port)" "127.0.0.1:$(port)"
fi
start "$W/a" "$A_HTTP" "$W/a.log"; a_pid=$started
start "$W/b" "$B_HTTP" "$W/b.log"; b_pid=$started
request "$W/a" "$A_HTTP" a
curl -sf --data-binary @"$W/req-a.der" -H 'Content-Type: application/ocsp-request' "http://$B_HTTP/ocsp" -o /dev/null

h2() { # url request n c log
  h2load --h1 -n "$3" -c "$4" -d "$2" -H 'Content-Type: application/ocsp-request' --log-file="$5" "$1" 2>&1
}
ok_of() { sed -n 's/.*status codes: \([0-9]*\) 2xx.*/\1/p'; }
pct() { cat "$@" | awk '{print $3}' | sort -n | awk '{a[NR]=$1} END {printf "%.2f ms | %.2f ms", a[int(NR*0.5)]/1000, a[int(NR*0.99)]/1000}'; }
us() { python3 -c "import sys; print(f'{(float(sys.argv[2])-float(sys.argv[1]))*1e6/float(sys.argv[3]):.0f} µs')" "$@"; }

row() { # name nodes(1|2) pids... ; uses $url1 $req1 [$url2 $req2]
  local name=$1 nodes=$2; shift 2
  local server_pids=("$@")
  local s0=0 s1=0 p0 p1 t0 t1 ok=0
  for p in "${server_pids[@]}"; do s0=$(python3 -c "print($s0 + $(cpu_tree "$p"))"); done
  p0=$(cpu_tree "$pg_pid")
  t0=$(date +%s.%N)
  if [ "$nodes" = 1 ]; then
    ok=$(h2 "$url1" "$req1" "$N" "$C" "$W/l1" | ok_of)
    local lat; lat=$(pct "$W/l1")
  else
    h2 "$url1" "$req1" $((N / 2)) $((C / 2)) "$W/l1" >"$W/o1" &
    local h=$!
    h2 "$url2" "$req2" $((N / 2)) $((C / 2)) "$W/l2" >"$W/o2"
    wait "$h"
    ok=$(( $(ok_of <"$W/o1") + $(ok_of <"$W/o2") ))
    local lat; lat=$(pct "$W/l1" "$W/l2")
  fi
  t1=$(date +%s.%N)
  for p in "${server_pids[@]}"; do s1=$(python3 -c "print($s1 + $(cpu_tree "$p"))"); done
  p1=$(cpu_tree "$pg_pid")
  local rps; rps=$(python3 -c "print(f'{$ok / ($t1 - $t0):.0f}')")
  local pgcpu="—"
  [ "$name" != sled ] && pgcpu=$(us "$p0" "$p1" "$ok")
  printf '| %s | %s | %s | %s | %s | %s | %s | %s/%s |\n' "$name" "$nodes" "$C" "$rps" "$lat" \
    "$(us "$s0" "$s1" "$ok")" "$pgcpu" "$ok" "$N"
}

echo "| store | nodes | concurrent clients (total) | requests/s | p50 | p99 | server CPU / request | PostgreSQL CPU / request | 2xx |"
echo "|---|---|---|---|---|---|---|---|---|"
for _ in $(seq "$R"); do
  url1="http://$S_HTTP/ocsp" req1="$W/req-sled.der"
  row sled 1 "$sled_pid"
  url1="http://$A_HTTP/ocsp" req1="$W/req-a.der"
  row PostgreSQL 1 "$a_pid" "$b_pid"
  url2="http://$B_HTTP/ocsp" req2="$W/req-a.der"
  row PostgreSQL 2 "$a_pid" "$b_pid"
done
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
