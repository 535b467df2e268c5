#!/usr/bin/env bash
# Installs what cps-trust needs on Debian 12 (root): build dependencies, the embedded HSM
# (SoftHSM2), the PC/SC stack and the third-party peers the test suite checks against.
# Idempotent: packages already present are not reinstalled; the Python peers live in .peers/venv
# and the Node ones in .peers/node, both installed from the locks in scripts/peers/.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
peers="$repo/.peers"

APT_PACKAGES=(
  # build
  build-essential pkg-config libssl-dev libpcsclite-dev curl ca-certificates python3-venv
  # embedded HSM and PKCS#11 tools
  softhsm2 opensc opensc-pkcs11 libengine-pkcs11-openssl
  # PC/SC stack with the virtual reader (card simulator)
  pcscd libpcsclite1 pcsc-tools vsmartcard-vpcd
  # interop peers: XML-DSig, syslog-TLS, NTP, load tools, browser
  openssl xmlsec1 rsyslog rsyslog-gnutls gnutls-bin chrony wrk nghttp2-client netcat-openbsd procps
  # TLS policy scanners; the browser the console tests drive
  sslscan testssl.sh chromium fonts-liberation
  # the shared store of a cluster (the tests start their own servers; nothing runs as a service)
  postgresql-15 postgresql-client-15
  # the monitoring peer: the tests start their own prometheus (and promtool) on a loopback port
  prometheus
)
command -v npm >/dev/null 2>&1 || APT_PACKAGES+=(nodejs npm)

missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "==> apt-get install ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# The Python and Node peers are installed from locks that pin the whole dependency tree with
# hashes (scripts/peers/: requirements.lock, package.json + package-lock.json). A stamp inside
# .peers/ records which lock (and which interpreter) an environment was built from: when either
# changes the environment is rebuilt from scratch, so an old .peers/ cannot hide a lock change.
locks="$repo/scripts/peers"
stamp_of() { cat "$@" | sha256sum | cut -d' ' -f1; }

# Python peers (pkilint, signxml, ntplib) in a private venv.
py_want="lock $(stamp_of "$locks/requirements.lock") python $(python3 -c 'import os, sys; print(os.path.realpath(sys.executable), sys.version.split()[0])')"
py_stamp="$peers/venv/.cps-trust-lock"
if [ ! -x "$peers/venv/bin/lint_pkix_cert" ] || [ ! -f "$py_stamp" ] || [ "$(cat "$py_stamp")" != "$py_want" ]; then
  echo "==> Python peers into $peers/venv (from scripts/peers/requirements.lock)"
  rm -rf "$peers/venv"
  mkdir -p "$peers"
  python3 -m venv "$peers/venv"
  # --require-hashes: every package pinned and checked; --no-deps: nothing outside the lock;
  # --only-binary: wheels only, no build step runs.
  "$peers/venv/bin/pip" install -q --disable-pip-version-check --require-hashes --no-deps \
    --only-binary=:all: -r "$locks/requirements.lock"
  "$peers/venv/bin/pip" check --disable-pip-version-check >/dev/null
  echo "$py_want" >"$py_stamp"
fi

# Playwright's driver library (no bundled browser: the tests drive Debian's chromium), with
# npm ci: exactly package-lock.json, integrity hashes checked, no install scripts.
node_want="lock $(stamp_of "$locks/package.json" "$locks/package-lock.json") node $(node --version)"
node_stamp="$peers/node/.cps-trust-lock"
if [ ! -f "$peers/node/node_modules/playwright-core/package.json" ] || [ ! -f "$node_stamp" ] \
  || [ "$(cat "$node_stamp")" != "$node_want" ]; then
  echo "==> Node peers into $peers/node (from scripts/peers/package-lock.json)"
  rm -rf "$peers/node"
  mkdir -p "$peers/node"
  cp "$locks/package.json" "$locks/package-lock.json" "$peers/node/"
  (cd "$peers/node" && npm ci --silent --no-audit --no-fund --ignore-scripts >/dev/null)
  echo "$node_want" >"$node_stamp"
fi

# Rust toolchain (present on the build machines; installed only if missing).
if ! command -v cargo >/dev/null 2>&1; then
  echo "cargo not found: install the Rust toolchain (rustup) first" >&2
  exit 1
fi
echo "==> dependencies ready"
