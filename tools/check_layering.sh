#!/usr/bin/env bash
# The architecture rule a grep can see: operators/ is Eigen + std only.
set -euo pipefail
cd "$(dirname "$0")/.."
bad=$(grep -rlE '#include *[<"](zmq|cppzmq|prometheus/|oneapi/tbb|tbb/|spdlog/|google/protobuf)|\.pb\.h"' operators || true)
if [ -n "$bad" ]; then
  echo "operators/ must use Eigen and the standard library only; these files include more:" >&2
  echo "$bad" >&2
  exit 1
fi
echo "layering: operators/ uses Eigen + std only"
