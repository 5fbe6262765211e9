#!/usr/bin/env bash
# bench/allreduce on a machine without Node.js (e.g. a 16-core GPU host that has PyTorch), like scripts/gpu-check.sh.
#
#   bench/allreduce/packed.sh --pack   here (Node.js and the dev dependencies): builds the addon, compiles the
#                                      benchmark and the collective library into $carry/dist, packs node into
#                                      $carry/node.xz; copy the repository with $carry to the other machine
#   bench/allreduce/packed.sh [args]   there: unpacks node (python3's lzma) and runs the compiled run.js with the
#                                      given arguments (default: --worlds 2,4,8), printing the usual figure lines
#
# Needs there: python3 with torch (gloo) for the peer side (torchrun on PATH, or python3 -m torch.distributed.run),
# Linux. Env: TENSILE_CARRY (default .carry), NODE (a node binary to use instead of the packed one).
set -uo pipefail
cd "$(dirname "$0")/../.."
carry=${TENSILE_CARRY:-.carry}
[[ "$carry" = /* ]] || carry="$PWD/$carry"
# shellcheck source=../../scripts/lib/carry.sh
source scripts/lib/carry.sh

pack() {
  set -e
  npx node-gyp rebuild -C collective/native >/dev/null 2>&1
  rm -rf "$carry/dist/bench" "$carry/dist/collective"
  mkdir -p "$carry"
  # Compile only what the benchmark needs; tsc still emits on errors elsewhere.
  carry_compile "bench pack" bench/allreduce/run.ts bench/allreduce/tensile-worker.ts bench/allreduce/loopback-node.ts
  cp bench/allreduce/*.py "$carry/dist/bench/allreduce/"
  carry_addon
  # The compiled ESM needs "type": "module" and the runtime dependencies the collective library imports (zod).
  echo '{ "type": "module" }' >"$carry/dist/package.json"
  mkdir -p "$carry/dist/node_modules"
  for dep in zod; do cp -rL "node_modules/$dep" "$carry/dist/node_modules/"; done
  carry_node
}

if [[ "${1:-}" == "--pack" ]]; then
  pack
  exit $?
fi

carry_find_node
main="$carry/dist/bench/allreduce/run.js"
if [[ -z "$node_bin" || ! -f "$main" ]]; then
  echo "bench/allreduce: no node binary or no $main: run 'bench/allreduce/packed.sh --pack' where Node.js is installed"
  exit 2
fi
echo "# machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), node $("$node_bin" --version)"
if [[ $# -eq 0 ]]; then set -- --worlds 2,4,8; fi
# TENSILE_NATIVE_ADDON: the packed addon (the loader's source-tree paths do not exist in the carry).
TENSILE_NATIVE_ADDON="$carry/dist/collective/native/build/Release/tensile_native.node" \
  exec "$node_bin" "$main" "$@"
