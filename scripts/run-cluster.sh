#!/usr/bin/env bash
# Runs cps-trust as a cluster on this machine, in the foreground, as run.sh does for one node:
# a PostgreSQL primary with a synchronous standby (Debian's postgresql-15, started here, not as
# a service), and two appliance nodes sharing the database and the HSM token, on loopback ports.
# Ctrl-C stops the nodes and both database servers.
#   CPS_TRUST_CLUSTER  directory of the cluster (default: ./.cluster in the repository)
#
#   node a: http 127.0.0.1:8080  https 127.0.0.1:8443  syslog-tls 127.0.0.1:6514  ntp 127.0.0.1:11123
#   node b: http 127.0.0.1:8081  https 127.0.0.1:8444  syslog-tls 127.0.0.1:6515  ntp 127.0.0.1:11124
#   PostgreSQL: primary 127.0.0.1:55432, synchronous standby 127.0.0.1:55433 (database cps)
#
# A real deployment puts a load balancer in front of the nodes' HTTPS, HTTP (OCSP, CRL) and
# syslog-TLS ports, a network HSM behind them instead of the shared SoftHSM2 directory, and the
# two database servers on their own machines (README, "Several nodes").
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
scripts/install-deps.sh
cargo build --release --locked -p cps-trust
bin="$repo/target/release/cps-trust"
dir=${CPS_TRUST_CLUSTER:-$repo/.cluster}
pgbin=/usr/lib/postgresql/15/bin
primary_port=55432
standby_port=55433
url="postgresql://postgres@127.0.0.1:$primary_port,127.0.0.1:$standby_port/cps?target_session_attrs=read-write"
mkdir -p "$dir"

# PostgreSQL refuses to run as root: run it as the `postgres` user of Debian's package.
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
pids=()
stop() {
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
}
trap stop EXIT

start_pg() { # data-dir port log
  as_pg "$pgbin/postgres" -D "$1" -p "$2" -k "$dir/pg-sock" -c listen_addresses=127.0.0.1 \
    >"$3" 2>&1 & pids+=($!)
  for _ in $(seq 100); do as_pg "$pgbin/pg_isready" -q -h 127.0.0.1 -p "$2" && return 0; sleep 0.2; done
  echo "PostgreSQL on port $2 did not start; see $3" >&2; exit 1
}

mkdir -p "$dir/pg-sock"
[ "$(id -u)" = 0 ] && chown postgres: "$dir" "$dir/pg-sock"
if [ ! -d "$dir/pg-primary" ]; then
  as_pg "$pgbin/initdb" -D "$dir/pg-primary" -U postgres -A trust -E UTF8 --locale=C >/dev/null
  cat >>"$dir/pg-primary/postgresql.conf" <<EOF
wal_level = replica
fsync = on
synchronous_commit = on
EOF
fi
start_pg "$dir/pg-primary" $primary_port "$dir/pg-primary.log"
as_pg psql -h 127.0.0.1 -p $primary_port -U postgres -tAc "SELECT 1 FROM pg_database WHERE datname='cps'" | grep -q 1 ||
  as_pg psql -h 127.0.0.1 -p $primary_port -U postgres -qc "CREATE DATABASE cps"
if [ ! -d "$dir/pg-standby" ]; then
  as_pg "$pgbin/pg_basebackup" -h 127.0.0.1 -p $primary_port -U postgres -D "$dir/pg-standby" -R -X stream
  echo "primary_conninfo = 'host=127.0.0.1 port=$primary_port user=postgres application_name=standby'" \
    >>"$dir/pg-standby/postgresql.auto.conf"
  # After a promotion the standby notices within 100 ms, not PostgreSQL's default 5 s
  # (BENCHMARKS.md, failover).
  echo "wal_retrieve_retry_interval = 100ms" >>"$dir/pg-standby/postgresql.auto.conf"
fi
start_pg "$dir/pg-standby" $standby_port "$dir/pg-standby.log"
# From now on the primary acknowledges a commit once the standby has it on disk (set after the
# standby exists: a primary waiting for an absent standby would acknowledge nothing).
as_pg psql -h 127.0.0.1 -p $primary_port -U postgres -qc "ALTER SYSTEM SET synchronous_standby_names = 'standby'"
as_pg psql -h 127.0.0.1 -p $primary_port -U postgres -qtAc "SELECT pg_reload_conf()" >/dev/null

# Node a: the key ceremony writes the hierarchy into the database; node b joins from a's home.
if [ ! -f "$dir/node-a/cps-trust.toml" ]; then
  "$bin" --home "$dir/node-a" init --time-source declared --store-url "$url"
  printf '\n[cluster]\nnode_id = "a"\n' >>"$dir/node-a/cps-trust.toml"
fi
if [ ! -f "$dir/node-b/cps-trust.toml" ]; then
  "$bin" --home "$dir/node-b" cluster join --from "$dir/node-a" --node-id b \
    --http 127.0.0.1:8081 --https 127.0.0.1:8444 --syslog-tls 127.0.0.1:6515 --ntp 127.0.0.1:11124
fi
"$bin" --home "$dir/node-a" serve >"$dir/node-a.log" 2>&1 & pids+=($!)
for _ in $(seq 150); do curl -sf -o /dev/null http://127.0.0.1:8080/health && break; sleep 0.2; done
"$bin" --home "$dir/node-b" serve >"$dir/node-b.log" 2>&1 & pids+=($!)
for _ in $(seq 150); do curl -sf -o /dev/null http://127.0.0.1:8081/health && break; sleep 0.2; done
curl -s http://127.0.0.1:8080/health; echo
curl -s http://127.0.0.1:8081/health; echo
echo "cluster up (logs in $dir); Ctrl-C stops it"
wait -n "${pids[@]}"
