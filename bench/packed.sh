#!/usr/bin/env bash
# bench/allreduce and bench/rpc on a machine without Node.js (e.g. a 16-core GPU host that has PyTorch), like
# scripts/gpu-check.sh.
#
#   bench/packed.sh --pack              here (Node.js and the dev dependencies): builds the addon, compiles
#                                       bench/allreduce and the collective library into $carry/dist, bundles bench/rpc
#                                       (its dependencies included) with esbuild, packs node into $carry/node.xz; copy
#                                       the repository with $carry to the other machine
#   bench/packed.sh [--results FILE] [allreduce|rpc|all] [args]
#                                       there: unpacks node (python3's lzma) and runs the compiled benchmark(s) with
#                                       the given arguments (defaults: allreduce --worlds 2,4,8; rpc --repeats 5; all:
#                                       both, with their defaults), printing the usual figure lines; --results also
#                                       writes them as a bench/results/<machine>.txt file (made anew; one section per benchmark)
#
# Needs there: python3 with torch (gloo, rpc) for the peer side (torchrun on PATH, or python3 -m torch.distributed.run),
# Linux. Env: TENSILE_CARRY (default .carry), NODE (a node binary to use instead of the packed one), BENCH_PYTHON (the
# python3 with torch for bench/rpc's peer; default /usr/bin/python3, else python3 on PATH), TENSILE_PACK_NODE=0 (pack
# without node.xz: the other machine then needs NODE; the test of this script uses it).
set -uo pipefail
cd "$(dirname "$0")/.."
carry=${TENSILE_CARRY:-.carry}
[[ "$carry" = /* ]] || carry="$PWD/$carry"
# shellcheck source=../scripts/lib/carry.sh
source scripts/lib/carry.sh

pack() {
  set -e
  # The addon as built here, rebuilt only when a source is newer (a rebuild replaces the file other processes load).
  local addon=collective/native/build/Release/tensile_native.node
  if [[ ! -f $addon || -n "$(find collective/native/src collective/native/binding.gyp -newer $addon -print -quit)" ]]; then
    npx node-gyp rebuild -C collective/native >/dev/null 2>&1
  fi
  rm -rf "$carry/dist/bench" "$carry/dist/collective"
  mkdir -p "$carry"
  # Compile only what the benchmark needs; tsc still emits on errors elsewhere.
  carry_compile "bench pack" bench/allreduce/run.ts bench/allreduce/tensile-worker.ts bench/allreduce/loopback-node.ts
  cp bench/allreduce/*.py "$carry/dist/bench/allreduce/"
  # bench/rpc needs @grpc/grpc-js and the rest of the RPC library's dependencies: one bundle per process, with a
  # require() for the CommonJS ones.
  npx esbuild bench/rpc/run.ts bench/rpc/worker.ts --bundle --platform=node --format=esm --target=node20 \
    --outdir="$carry/dist/bench/rpc" --log-level=warning \
    --banner:js="import { createRequire as __tensileRequire } from 'node:module'; const require = __tensileRequire(import.meta.url);"
  cp bench/rpc/*.py "$carry/dist/bench/rpc/"
  carry_addon
  # The compiled ESM needs "type": "module" and the runtime dependencies the collective library imports (zod).
  echo '{ "type": "module" }' >"$carry/dist/package.json"
  mkdir -p "$carry/dist/node_modules"
  for dep in zod; do cp -rL "node_modules/$dep" "$carry/dist/node_modules/"; done
  if [[ "${TENSILE_PACK_NODE:-1}" != 0 ]]; then carry_node; fi
}

if [[ "${1:-}" == "--pack" ]]; then
  pack
  exit $?
fi

results=""
if [[ "${1:-}" == "--results" ]]; then
  results=${2:?--results needs a file}
  shift 2
fi
which=${1:-all}
case "$which" in
  allreduce | rpc | all) [[ $# -gt 0 ]] && shift ;;
  -*) which=all ;;
  *)
    echo "bench/packed.sh: '$which': expected allreduce, rpc or all (or --pack)"
    exit 2
    ;;
esac
if [[ "$which" == all && $# -gt 0 ]]; then
  echo "bench/packed.sh: arguments go with one benchmark (allreduce or rpc), not with all"
  exit 2
fi

carry_find_node
if [[ -z "$node_bin" || ! -f "$carry/dist/bench/allreduce/run.js" || ! -f "$carry/dist/bench/rpc/run.js" ]]; then
  echo "bench/packed.sh: no node binary or no compiled benchmarks in $carry/dist: run 'bench/packed.sh --pack' where Node.js is installed"
  exit 2
fi
machine="$(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), node $("$node_bin" --version)"
echo "# machine: $machine"
# TENSILE_NATIVE_ADDON: the packed addon (the loader's source-tree paths do not exist in the carry).
export TENSILE_NATIVE_ADDON="$carry/dist/collective/native/build/Release/tensile_native.node"
if [[ -n "$results" ]]; then
  printf '# machine: %s (%s), %s GiB\n# Figure lines written by bench/packed.sh --results; one section per benchmark.\n' \
    "$(basename "$results" .txt)" "$machine" "$(awk '/MemTotal/ {printf "%d", $2 / 1048576}' /proc/meminfo)" >"$results"
fi
status=0

# run NAME DEFAULT_ARGS... -- ARGS...: one benchmark, its figure lines kept as a section of $results.
run() {
  local name=$1
  shift
  local -a args=()
  while [[ $# -gt 0 && "$1" != "--" ]]; do args+=("$1"); shift; done
  shift
  [[ $# -gt 0 ]] && args=("$@")
  local stamp load out
  stamp=$(date -u +%Y-%m-%dT%H:%M:%SZ)
  out=$(mktemp)
  "$node_bin" "$carry/dist/bench/$name/run.js" "${args[@]}" | tee "$out"
  local rc=${PIPESTATUS[0]}
  [[ $rc -eq 0 ]] || status=$rc
  load=$(cut -d' ' -f1 /proc/loadavg)
  if [[ -n "$results" ]]; then
    printf '\n## %s %s load=%s args=%s\n' "$name" "$stamp" "$load" "${args[*]}" >>"$results"
    grep '^figure=' "$out" >>"$results"
  fi
  rm -f "$out"
}

if [[ "$which" == allreduce || "$which" == all ]]; then run allreduce --worlds 2,4,8 -- "$@"; fi
if [[ "$which" == rpc || "$which" == all ]]; then run rpc --repeats 5 -- "$@"; fi
exit $status
