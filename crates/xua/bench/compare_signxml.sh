#!/usr/bin/env bash
# Validation throughput of cps-xua against signxml's in-process verification, same machine, same
# run, same assertions (RSA-2048 and P-256 signers).
#
#   crates/xua/bench/compare_signxml.sh [signxml-seconds]
#
# 1. `cargo bench -p cps-xua --bench validate` (criterion; writes the assertions it measures to
#    $CARGO_TARGET_DIR/xua-bench/), 2. signxml over those files, 3. a table with the ratios
#    (wall-clock rates, and on-CPU rates, which do not depend on other load on the machine).
set -euo pipefail
repo=$(cd "$(dirname "$0")/../../.." && pwd)
cd "$repo"
target=${CARGO_TARGET_DIR:-$repo/target}
secs=${1:-5}
py=${CPS_TRUST_PEERS_VENV:-$repo/.peers/venv}/bin/python
log=$(mktemp)
cargo bench -p cps-xua --bench validate | tee "$log"
echo
echo "| signer | cps-xua verify, 1 thread (/s) | cps-xua verify, 2 threads (/s) | signxml verify (/s) | ratio 1 thread | cps-xua on-CPU (/s) | signxml on-CPU (/s) | ratio on-CPU |"
echo "|---|---|---|---|---|---|---|---|"
for kind in rsa2048 p256; do
  alg=rsa; [ "$kind" = p256 ] && alg=ecdsa
  read -r sx_wall sx_cpu < <("$py" crates/xua/bench/signxml_verify_rate.py \
      "$target/xua-bench/assertion-$kind.xml" "$target/xua-bench/seal-$kind.pem" "$alg" "$secs")
  ns1=$("$py" -c 'import json,sys; print(json.load(open(sys.argv[1]))["mean"]["point_estimate"])' \
      "$target/criterion/xua_$kind/verify_1-thread/new/estimates.json")
  ns2=$("$py" -c 'import json,sys; print(json.load(open(sys.argv[1]))["mean"]["point_estimate"])' \
      "$target/criterion/xua_$kind/verify_2-threads/new/estimates.json")
  cpu=$(grep -E "^\| $kind \|" "$log" | tail -1 | awk -F'|' '{gsub(/ /,"",$4); print $4}')
  "$py" - "$kind" "$ns1" "$ns2" "$sx_wall" "$sx_cpu" "$cpu" <<'PY'
import sys
kind, ns1, ns2, sxw, sxc, cpu = sys.argv[1], *map(float, sys.argv[2:])
r1, r2 = 1e9 / ns1, 1e9 / ns2
print(f"| {kind} | {r1:.0f} | {r2:.0f} | {sxw:.0f} | {r1 / sxw:.1f}x | {cpu:.0f} | {sxc:.0f} | {cpu / sxc:.1f}x |")
PY
done
rm -f "$log"
