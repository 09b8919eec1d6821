#!/usr/bin/env bash
# Installs what the test suite needs on a fresh Debian/Ubuntu machine: Mosquitto (the real
# broker the tests start on a free port) and the package with its test extra.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v mosquitto >/dev/null 2>&1 && [ ! -x /usr/sbin/mosquitto ]; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq mosquitto
fi
python3 -m pip install -q -e '.[test,plot]'
