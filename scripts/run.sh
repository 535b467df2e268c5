#!/usr/bin/env bash
# Sets up and runs cps-trust on this machine: installs what is missing (apt, Python peers),
# builds the release binary, initialises a home with the embedded defaults (SoftHSM2 token,
# CA hierarchy) the first time, and starts the appliance in the foreground (Ctrl-C stops it).
#   CPS_TRUST_HOME  home directory (default: ./.home in the repository)
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
scripts/install-deps.sh
cargo build --release --locked -p cps-trust
home=${CPS_TRUST_HOME:-$repo/.home}
bin="$repo/target/release/cps-trust"
if [ ! -f "$home/cps-trust.toml" ]; then
  "$bin" --home "$home" init
fi
"$bin" --home "$home" ca show | head -2
exec "$bin" --home "$home" serve
