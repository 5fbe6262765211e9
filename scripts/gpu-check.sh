#!/usr/bin/env bash
# GPU check of the NCCL backend: loads the native addon, checks every collective/dtype/op at world size 1 (host and
# device buffers, in place and out of place) against a CPU reference, and measures per-call latency and throughput
# side by side with torch.distributed (NCCL, world size 1, same GPU and sizes), printing figure lines.
#
#   scripts/gpu-check.sh --pack   on a machine with Node.js and the repo's dev dependencies: builds the addon,
#                                 compiles the JS it needs into .carry/dist and packs node into .carry/node.xz
#   scripts/gpu-check.sh          on the GPU machine (no Node.js, no network needed): unpacks node and runs
#
# Needs on the GPU machine: python3 (to unpack node); an NVIDIA driver, libnccl.so.2 and libcudart (else every check
# skips with the reason); python3 with torch built with NCCL for the peer figures (else peer=na).
# Env: TENSILE_CARRY (default .carry), NODE (a node binary to use instead of the packed one).
set -uo pipefail
cd "$(dirname "$0")/.."
carry=${TENSILE_CARRY:-.carry}
# shellcheck source=lib/carry.sh
source scripts/lib/carry.sh

pack() {
  set -e
  npx node-gyp rebuild -C collective/native >/dev/null 2>&1
  rm -rf "$carry/dist"
  mkdir -p "$carry"
  # Compile only what the check needs (errors elsewhere in the tree must not block it); tsc still emits on errors.
  carry_compile "gpu-check" test/gpu/gpu-check-main.ts test/gpu/nccl.test.ts
  carry_addon
  carry_node
}

if [[ "${1:-}" == "--pack" ]]; then
  pack
  exit $?
fi

carry_find_node
if [[ -z "$node_bin" ]]; then
  echo "gpu-check: no node binary: run 'scripts/gpu-check.sh --pack' where Node.js is installed and carry $carry here"
  exit 2
fi
main="$carry/dist/test/gpu/gpu-check-main.js"
if [[ ! -f "$main" ]]; then
  echo "gpu-check: $main is missing: run 'scripts/gpu-check.sh --pack' first"
  exit 2
fi

echo "== machine"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null || echo "nvidia-smi: not available"
echo "node $("$node_bin" --version)"

status=0
echo "== GPU tests (node --test)"
"$node_bin" --test "$carry/dist/test/gpu/nccl.test.js" || status=1

peer_json=/tmp/tensile-torch-peer.json
rm -f "$peer_json"
echo "== torch.distributed peer"
if python3 -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() and torch.distributed.is_nccl_available() else 1)' 2>/dev/null; then
  timeout 240 python3 test/gpu/torch_peer.py >"$peer_json" || echo "torch peer failed (exit $?)"
else
  echo "torch with CUDA and NCCL not available: peer figures will be na"
fi

echo "== tensile checks and figures"
timeout 300 "$node_bin" "$main" --peer "$peer_json" || status=1
exit $status
