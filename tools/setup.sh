#!/usr/bin/env bash
# Installs what pktswitch needs on a Debian machine: system packages (as root), a venv in
# .venv with the package installed editable (which compiles the native extension) and the
# test tools. Safe to run again: it only installs what is missing or changed.
# --venv-only: the venv alone, without apt or root (make lint, make unit); gcc, the Python
# headers and venv must be there already.
set -euo pipefail
cd "$(dirname "$0")/.."

venv_only=0
case "${1:-}" in
  "") ;;
  --venv-only) venv_only=1 ;;
  *) echo "usage: tools/setup.sh [--venv-only]" >&2; exit 2 ;;
esac

APT_PACKAGES=(iproute2 nginx-light iperf3 tcpdump curl ethtool nftables iputils-ping gcc python3-dev
  python3-venv dnsmasq-base bind9-dnsutils)

apt_packages() {
  local missing=() p
  for p in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  if [ ${#missing[@]} -gt 0 ] || [ "${PKS_APT_ALWAYS:-0}" = 1 ]; then
    if [ "$(id -u)" -ne 0 ]; then
      echo "setup: missing ${missing[*]}; run as root to install them with apt-get" >&2
      exit 1
    fi
    echo "setup: installing system packages: ${APT_PACKAGES[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${APT_PACKAGES[@]}" >/dev/null
  fi
}
[ "$venv_only" = 1 ] || apt_packages

PY=${PYTHON:-python3}
"$PY" -c 'import sys; sys.exit(sys.version_info < (3, 11))' || {
  echo "setup: pktswitch needs Python >= 3.11 ($PY is $("$PY" --version 2>&1))" >&2; exit 1; }

stamp=.venv/.pktswitch-installed
# without apt: name the Debian packages a step needs, in one line, rather than fail inside it
need() {
  if [ "$venv_only" = 1 ] && [ $# -gt 0 ]; then
    echo "setup: missing $* (as root: apt-get install $*)" >&2
    exit 1
  fi
}
if [ ! -x .venv/bin/python ]; then
  "$PY" -c 'import ensurepip' 2>/dev/null || need python3-venv
  "$PY" -m venv .venv
fi
# reinstall when the packaging or the native sources changed since the last install
if [ ! -f "$stamp" ] || [ -n "$(find pyproject.toml setup.py native -newer "$stamp" -print -quit)" ] \
   || ! .venv/bin/python -c 'import pktswitch._native' 2>/dev/null; then
  build=()
  command -v gcc >/dev/null || build+=(gcc)
  "$PY" -c 'import os, sys, sysconfig
sys.exit(not os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")))' \
    || build+=(python3-dev)
  need "${build[@]}"
  .venv/bin/pip install -q --disable-pip-version-check -U pip setuptools wheel "cffi>=1.17"
  .venv/bin/pip install -q --disable-pip-version-check --no-build-isolation -e ".[test]"
  touch "$stamp"
fi
