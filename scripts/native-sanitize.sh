#!/usr/bin/env bash
# Builds the native addon with AddressSanitizer and UndefinedBehaviorSanitizer in a scratch copy (the normal build in
# collective/native/build is left alone) and runs the tests that drive the shared-memory plane, the socket plane and
# their kernels on it: the kernel unit test, the shm contract suite (3 ranks, small slots: many steps), the shm fault
# tests, the RPC shared-memory transfer tests (xfer.cc), the socket-plane contract suite (3 ranks flat with the ring
# and hierarchical in 64 KiB chunks; 4 ranks hierarchical and flat), the socket-plane fault tests (SIGKILL, garbage
# frames, abort, timeout) and the socket plane's addon calls in one process (stray connections, wrong tokens,
# mismatch, destroy), and the stack dumper's tests (stacks.cc; the test's children load the same addon).
# Usage: scripts/native-sanitize.sh [scratch dir]   (default: a fresh temporary directory, removed afterwards)
# Exit status: non-zero when the build fails or a test fails (a sanitizer report aborts the process: halt_on_error).
set -euo pipefail
cd "$(dirname "$0")/.."
scratch=${1:-$(mktemp -d /tmp/tensile-sanitize-XXXXXX)}
[[ $# -ge 1 ]] || trap 'rm -rf "$scratch"' EXIT
mkdir -p "$scratch"
cp -r collective/native/binding.gyp collective/native/src "$scratch/"
flags="-fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined -g -O1"
echo "== building the addon with $flags in $scratch"
repo=$PWD
# Use the headers of the installed node when it ships them (no download); else node-gyp fetches them.
prefix=$(dirname "$(dirname "$(command -v node)")")
nodedir=()
[[ -f "$prefix/include/node/node_api.h" ]] && nodedir=(--nodedir="$prefix")
(cd "$scratch" && NODE_PATH="$repo/node_modules" CXXFLAGS="$flags" LDFLAGS="-fsanitize=address,undefined" "$repo/node_modules/.bin/node-gyp" rebuild "${nodedir[@]}" >build.log 2>&1) ||
  { tail -30 "$scratch/build.log"; exit 1; }
addon="$scratch/build/Release/tensile_native.node"
# Node itself is not instrumented: the ASan runtime must come first in the process (LD_PRELOAD), and leak checking is
# off (V8 keeps allocations to the end by design).
preload=()
for lib in libasan.so libubsan.so; do
  path=$(gcc -print-file-name="$lib")
  # gcc prints the bare name when it has no such library.
  [[ "$path" == /* && -e "$path" ]] ||
    { echo "native-sanitize: gcc has no $lib (Debian: install g++, which pulls libasan8 and libubsan1)" >&2; exit 1; }
  preload+=("$path")
done
export LD_PRELOAD="${preload[*]}"
export ASAN_OPTIONS=detect_leaks=0:halt_on_error=1:abort_on_error=0
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
export TENSILE_NATIVE_ADDON="$addon"
echo "== tests on the sanitized addon"
node scripts/run-tests.mjs test/unit/native/shm-reduce.test.ts test/integration/collective/shm-faults.test.ts \
  test/unit/rpc/shm-transfer.test.ts test/integration/rpc/shm-transfer.test.ts \
  test/integration/collective/js-stacks.test.ts test/unit/collective/js-stacks-native.test.ts
TEST_WORLDS=3,6 node scripts/run-tests.mjs test/integration/collective/shm-matrix.test.ts
node scripts/run-tests.mjs test/integration/collective/net-faults.test.ts test/integration/collective/net-native.test.ts
TEST_WORLDS=3,4 node scripts/run-tests.mjs test/integration/collective/net-matrix.test.ts
echo "== sanitized run passed"
