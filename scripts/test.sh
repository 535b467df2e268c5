#!/usr/bin/env bash
# Runs the whole test suite: installs what is missing (apt packages, Python peers), builds
# everything, then runs every unit, integration and end-to-end test against the real peers
# (SoftHSM2, pkcs11-tool, openssl, pkilint). Each test starts the daemons it needs and stops
# them by PID.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
scripts/install-deps.sh
cargo build --locked --workspace --all-targets
cargo test --locked --workspace --no-fail-fast
