#!/usr/bin/env bash
# Installs what a fresh machine lacks to build switchyard: cmake (pingora's zlib-ng needs it).
# Safe to run again: it does nothing when everything is there.
set -euo pipefail

have() { command -v "$1" >/dev/null 2>&1; }

if ! have cargo; then
  echo "install-deps: cargo is missing; install Rust first (https://rustup.rs)" >&2
  exit 1
fi

if ! have cmake; then
  echo "install-deps: installing cmake (needed by pingora's zlib-ng build)" >&2
  SUDO=""
  if [ "$(id -u)" != 0 ] && have sudo; then SUDO="sudo"; fi
  if have apt-get; then
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq cmake >/dev/null
  elif have pip3; then
    pip3 install --quiet cmake
  else
    echo "install-deps: no apt-get or pip3 to install cmake with; install cmake by hand" >&2
    exit 1
  fi
fi
have cmake || { echo "install-deps: cmake still missing after install" >&2; exit 1; }
