#!/usr/bin/env bash
# The test command: installs what is missing, builds, runs every test (unit and integration) under CTest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/install_deps.sh
bash tools/check_layering.sh
bash tools/build.sh
cd build
ctest --output-on-failure --timeout 600 "$@"
