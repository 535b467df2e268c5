#!/usr/bin/env bash
# Creates the embedded SoftHSM2 token by hand, the way `cps-trust init` does it for you.
# Only needed to prepare a token before running `cps-trust init --hsm-module ... --token-label ...`.
#   usage: init-softhsm-token.sh <dir> [label]
# Writes <dir>/softhsm2.conf, <dir>/softhsm/tokens/, and owner-only PIN files <dir>/secrets/hsm-{user,so}.pin.
set -euo pipefail
dir=$(realpath -m "${1:?usage: $0 <dir> [label]}")
label=${2:-cps-trust}
umask 077
mkdir -p "$dir/softhsm/tokens" "$dir/secrets"
sed "s|@HOME@|$dir|" "$(dirname "$0")/softhsm2.conf.template" > "$dir/softhsm2.conf"
user=$(od -An -N12 -tx1 /dev/urandom | tr -d ' \n'); so=$(od -An -N12 -tx1 /dev/urandom | tr -d ' \n')
printf '%s\n' "$user" > "$dir/secrets/hsm-user.pin"; printf '%s\n' "$so" > "$dir/secrets/hsm-so.pin"
SOFTHSM2_CONF="$dir/softhsm2.conf" softhsm2-util --init-token --free --label "$label" --so-pin "$so" --pin "$user"
echo "export SOFTHSM2_CONF=$dir/softhsm2.conf   # PIN: file:$dir/secrets/hsm-user.pin"
