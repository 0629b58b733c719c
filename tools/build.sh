#!/usr/bin/env bash
# Configures and builds specwatch into build/ (executables in build/bin/). Assumes tools/install_deps.sh ran.
set -euo pipefail
cd "$(dirname "$0")/.."
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build --parallel "$(nproc)"
