#!/usr/bin/env bash
# The architecture rules a grep can see (docs/architecture.md, "What each library may include"):
#   1. operators/ is Eigen + std only: no ZeroMQ, protobuf, TBB, prometheus, spdlog.
#   2. Dependencies point inward between the top-level folders: server -> stream -> operators; tools may use
#      stream and operators (and their own tools/ code), never server; proto/ is generated code only.
#   3. Inside operators/, the libraries have a direction: core <- model <- monitor, core <- dose, and session
#      above them all.
set -euo pipefail
cd "$(dirname "$0")/.."
status=0

fail() {
  echo "layering: $1" >&2
  echo "$2" | sed 's/^/  /' >&2
  status=1
}

bad=$(grep -rnE '#include *[<"](zmq|cppzmq|prometheus/|oneapi/tbb|tbb/|spdlog/|google/protobuf)|\.pb\.h"' operators || true)
[ -z "$bad" ] || fail "operators/ must use Eigen and the standard library only; these lines include more:" "$bad"

# folder: the project folders its files may include ("" = none besides itself).
declare -A allowed=(
  [operators]=""
  [stream]="operators"
  [server]="stream operators"
  [tools]="stream operators"
)
for folder in "${!allowed[@]}"; do
  pattern="#include \"(operators|stream|server|tools|tests)/"
  while IFS= read -r line; do
    [ -n "$line" ] || continue
    target=$(echo "$line" | sed -E 's/.*#include "([a-z_]+)\/.*/\1/')
    [ "$target" = "$folder" ] && continue
    ok=0
    for a in ${allowed[$folder]}; do [ "$target" = "$a" ] && ok=1; done
    [ $ok = 1 ] || fail "$folder/ may include only ${allowed[$folder]:-itself}:" "$line"
  done < <(grep -rnE "$pattern" "$folder" || true)
done

# operators/<library>: the operators libraries it may include besides itself.
declare -A inner=(
  [core]=""
  [model]="core"
  [monitor]="core model"
  [dose]="core"
  [session]="core model monitor dose"
)
for library in "${!inner[@]}"; do
  [ -d "operators/$library" ] || continue
  while IFS= read -r line; do
    [ -n "$line" ] || continue
    target=$(echo "$line" | sed -E 's/.*#include "operators\/([a-z_]+)\/.*/\1/')
    [ "$target" = "$library" ] && continue
    ok=0
    for a in ${inner[$library]}; do [ "$target" = "$a" ] && ok=1; done
    [ $ok = 1 ] || fail "operators/$library may include only operators/{${inner[$library]:-itself}}:" "$line"
  done < <(grep -rnE '#include "operators/' "operators/$library" || true)
done
for entry in operators/*; do
  name=$(basename "$entry")
  if [ -d "$entry" ] && [ -z "${inner[$name]+x}" ]; then fail "operators/$name is not a known library" "$entry"; fi
  if [ -f "$entry" ] && [ "$name" != CMakeLists.txt ]; then fail "operators/ holds libraries only" "$entry"; fi
done

[ $status = 0 ] && echo "layering: operators/ uses Eigen + std only; server -> stream -> operators; operators core <- model <- monitor, core <- dose, session on top"
exit $status
