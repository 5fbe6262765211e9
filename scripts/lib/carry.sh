# shellcheck shell=bash
# Packing for a machine without Node.js, shared by scripts/gpu-check.sh and bench/packed.sh. Source it from
# the repository root after setting $carry (the carry folder); the functions use paths relative to the root.

# carry_compile LABEL FILE...: compiles the FILEs and what they import into $carry/dist. Errors elsewhere in the tree
# must not block a check, and tsc still emits on errors, so a failure is reported (as LABEL) but not fatal.
carry_compile() {
  local label=$1
  shift
  npx tsc --ignoreConfig --outDir "$carry/dist" --rootDir . --module NodeNext --moduleResolution NodeNext --target ES2022 \
    --strict --skipLibCheck --types node --declaration false --sourceMap false "$@" ||
    echo "$label: tsc reported errors (output still emitted)"
}

# carry_addon: copies the built native addon to its place under $carry/dist.
carry_addon() {
  mkdir -p "$carry/dist/collective/native/build/Release"
  cp collective/native/build/Release/tensile_native.node "$carry/dist/collective/native/build/Release/"
}

# carry_node: packs this machine's node into $carry/node.xz (again only when node is newer), then says what is packed.
carry_node() {
  if [[ ! -f "$carry/node.xz" || "$(command -v node)" -nt "$carry/node.xz" ]]; then
    xz -T2 -6 -c "$(command -v node)" >"$carry/node.xz"
  fi
  echo "packed into $carry: node.xz ($(du -h "$carry/node.xz" | cut -f1)), dist/ ($(du -sh "$carry/dist" | cut -f1))"
}

# carry_find_node: sets node_bin to $NODE, else the packed node (unpacked with python3's lzma to /tmp/tensile-node),
# else node on PATH; empty when there is none.
carry_find_node() {
  node_bin=${NODE:-}
  if [[ -z "$node_bin" ]]; then
    if [[ -f "$carry/node.xz" ]]; then
      python3 -c "import lzma,shutil;shutil.copyfileobj(lzma.open('$carry/node.xz'),open('/tmp/tensile-node','wb'))" &&
        chmod +x /tmp/tensile-node && node_bin=/tmp/tensile-node
    elif command -v node >/dev/null; then
      node_bin=$(command -v node)
    fi
  fi
}
