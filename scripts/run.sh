#!/usr/bin/env bash
# Sets up and runs cps-trust on this machine: installs what is missing (apt, Python peers),
# builds the release binaries, initialises a home with the embedded defaults (SoftHSM2 token,
# CA hierarchy, operator credential) the first time, puts a simulated professional card into
# the virtual reader (pcscd + vpcd + firmware-sim), and runs the appliance in the foreground.
# Ctrl-C stops the appliance and the daemons this script started.
#   CPS_TRUST_HOME  home directory (default: ./.home in the repository)
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
scripts/install-deps.sh
cargo build --release --locked -p cps-trust -p firmware-sim
home=${CPS_TRUST_HOME:-$repo/.home}
bin="$repo/target/release/cps-trust"
sim="$repo/target/release/firmware-sim"
pids=()
stop() { for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done; }
trap stop EXIT

if [ ! -f "$home/cps-trust.toml" ]; then
  # The appliance signs only while the clock is trusted. On a host where chronyd/ntpd disciplines
  # the clock the kernel says so and `kernel` works; containers and many VMs never report it, so
  # this development home declares the clock trusted (README, "Time"; `time.source` in the config).
  "$bin" --home "$home" init --time-source declared
fi
"$bin" --home "$home" ca show | head -2

# PC/SC: reuse a running pcscd, or start one (its vpcd driver listens on 127.0.0.1:35963).
if ! pgrep -x pcscd >/dev/null; then
  mkdir -p "$home/pcsc"
  /usr/sbin/pcscd -f >"$home/pcsc/pcscd.log" 2>&1 & pids+=($!)
  sleep 1
fi
# A blank simulated card (PIN 123456, PUK 12345678, PIV default management key) in slot 0.
mkdir -p "$home/cards"
"$sim" run --card "0=$home/cards/card0.json" --init-missing --control "$home/cards/control.sock" \
  >"$home/cards/firmware-sim.log" 2>&1 & pids+=($!)
for _ in $(seq 50); do "$bin" --home "$home" card readers 2>/dev/null | grep -q "card present" && break; sleep 0.2; done
"$bin" --home "$home" card readers || true

"$bin" --home "$home" serve
