#!/usr/bin/env bash
# Installs what cps-trust needs on Debian 12 (root): build dependencies, the embedded HSM
# (SoftHSM2), the PC/SC stack and the third-party peers the test suite checks against.
# Idempotent: packages already present are not reinstalled; the Python peers live in .peers/venv.
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

# Python peers (pkilint, signxml, ntplib) in a private venv, pinned to the versions the suite is checked with.
if [ ! -x "$peers/venv/bin/lint_pkix_cert" ]; then
  echo "==> Python peers into $peers/venv"
  mkdir -p "$peers"
  python3 -m venv "$peers/venv"
  "$peers/venv/bin/pip" install -q "pkilint==0.13.3" "signxml==5.2.0" "ntplib==0.4.0"
fi

# Playwright's driver library (no bundled browser: the tests drive Debian's chromium).
if [ ! -f "$peers/node/node_modules/playwright-core/package.json" ]; then
  echo "==> playwright-core into $peers/node"
  mkdir -p "$peers/node"
  (cd "$peers/node" && npm install --silent --no-audit --no-fund "playwright-core@1.49.1" >/dev/null)
fi

# Rust toolchain (present on the build machines; installed only if missing).
if ! command -v cargo >/dev/null 2>&1; then
  echo "cargo not found: install the Rust toolchain (rustup) first" >&2
  exit 1
fi
echo "==> dependencies ready"
