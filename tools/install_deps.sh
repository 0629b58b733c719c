#!/usr/bin/env bash
# Installs the Debian 12 packages specwatch builds, tests and demos with, when any is missing.
# Every dependency is a Debian package; README.md says why each one is there.
set -euo pipefail
packages=(
  build-essential cmake ninja-build pkg-config
  libzmq3-dev cppzmq-dev libprotobuf-dev protobuf-compiler libeigen3-dev libtbb-dev
  prometheus-cpp-dev libspdlog-dev doctest-dev
  python3 python3-zmq python3-protobuf python3-numpy curl
)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "installing: ${missing[*]}"
  sudo_cmd=()
  [ "$(id -u)" -eq 0 ] || sudo_cmd=(sudo)
  "${sudo_cmd[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
