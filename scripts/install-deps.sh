#!/usr/bin/env bash
# Installs what a fresh machine lacks to build and test switchyard:
#   cmake              pingora's zlib-ng build needs it
#   protoc             etcd-client compiles etcd's protobuf API at build time (fleet mode)
#   etcd               the fleet tests start their own etcd cluster on loopback (never the
#                      system service, which this script disables if the package started it)
#   chromium           the status page's browser test (tests/status_page.rs) drives headless
#   chromium-driver    Chromium through chromedriver
# Safe to run again: it does nothing when everything is there, and runs apt-get update once.
set -euo pipefail

have() { command -v "$1" >/dev/null 2>&1; }

if ! have cargo; then
  echo "install-deps: cargo is missing; install Rust first (https://rustup.rs)" >&2
  exit 1
fi

SUDO=""
if [ "$(id -u)" != 0 ] && have sudo; then SUDO="sudo"; fi
updated=""
apt_install() { # apt_install PACKAGE... (quiet; one apt-get update per run)
  if [ -z "$updated" ]; then
    $SUDO apt-get update -qq
    updated=1
  fi
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "$@" >/dev/null
}

if ! have cmake; then
  echo "install-deps: installing cmake (needed by pingora's zlib-ng build)" >&2
  if have apt-get; then
    apt_install cmake
  elif have pip3; then
    pip3 install --quiet cmake
  else
    echo "install-deps: no apt-get or pip3 to install cmake with; install cmake by hand" >&2
    exit 1
  fi
fi
have cmake || { echo "install-deps: cmake still missing after install" >&2; exit 1; }

missing=()
have protoc || missing+=(protobuf-compiler)
have etcd || missing+=(etcd-server)
if [ ${#missing[@]} -gt 0 ]; then
  echo "install-deps: installing ${missing[*]} (fleet mode: etcd client build and tests)" >&2
  if ! have apt-get; then
    echo "install-deps: no apt-get; install protoc (protobuf-compiler) and etcd by hand" >&2
    exit 1
  fi
  apt_install "${missing[@]}"
  # The tests run their own cluster; a system etcd on 2379 would only get in the way.
  if have systemctl && systemctl is-active --quiet etcd 2>/dev/null; then
    $SUDO systemctl disable --now etcd >/dev/null 2>&1 || true
  fi
fi
have protoc || { echo "install-deps: protoc still missing after install" >&2; exit 1; }
have etcd || { echo "install-deps: etcd still missing after install" >&2; exit 1; }

# The status page is tested in a real browser (tests/status_page.rs drives headless Chromium).
if ! have chromium || ! have chromedriver; then
  if have apt-get; then
    echo "install-deps: installing chromium and chromium-driver (the status page's browser test)" >&2
    apt_install chromium chromium-driver
  else
    echo "install-deps: no apt-get: install chromium and chromedriver by hand for tests/status_page.rs" >&2
  fi
fi
