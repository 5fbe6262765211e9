#!/usr/bin/env bash
# Builds tensile's operator and agent images offline with buildah, then checks each one.
#
#   sudo scripts/images.sh            # as root; needs buildah and debootstrap (apt-get install buildah debootstrap)
#
# No container registry is needed: the bases are made here from Debian packages (debootstrap --variant=minbase
# bookworm) with this machine's Node.js 20 copied in, committed as local images, and passed to docker/Dockerfile.*
# as BUILD_BASE / RUNTIME_BASE; npm installs offline from this machine's npm cache, which this script first fills
# with the host's npm for whatever package-lock.json needs and the cache lacks (nothing after `npm ci`). The rootfs, the
# Debian packages, the bases and the build layers are cached, so a second run only rebuilds what changed.
#
# Results: localhost/tensile/agent:<tag> and localhost/tensile/operator:<tag> in buildah's storage.
# Environment:
#   TENSILE_IMAGE_TAG       image tag (default: package.json's version)
#   TENSILE_IMAGES_CACHE    cache directory (default /var/cache/tensile-images)
#   TENSILE_BUILDAH_DRIVER  buildah storage driver: overlay (default; vfs where overlay is unavailable) or vfs
#   TENSILE_DEBIAN_MIRROR   Debian mirror for debootstrap and apt (default http://deb.debian.org/debian)
#   TENSILE_REBUILD_BASE=1  rebuild the base images (the debootstrap rootfs stays cached)
#   TENSILE_NPM_FLAGS       npm ci flags in the build (default --offline)
# Exit status: 0 when both images were built and every check passed; 1 otherwise, with the failing check named.
set -euo pipefail
cd "$(dirname "$0")/.."

TAG="${TENSILE_IMAGE_TAG:-$(node -p 'require("./package.json").version')}"
CACHE="${TENSILE_IMAGES_CACHE:-/var/cache/tensile-images}"
MIRROR="${TENSILE_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
SUITE=bookworm
AGENT="localhost/tensile/agent:$TAG"
OPERATOR="localhost/tensile/operator:$TAG"
BASE_RUNTIME="localhost/tensile-base:runtime-$SUITE"
BASE_BUILD="localhost/tensile-base:build-$SUITE"
# The packages the Dockerfiles' runtime stage wants (so the offline build needs no package index).
RUNTIME_PACKAGES=tini,libopenblas0-pthread,ca-certificates
BUILD_PACKAGES="python3 make g++"

T0=$(date +%s)
say() { printf 'images.sh: %s\n' "$*"; }
die() {
  printf 'images.sh: FAILED: %s\n' "$*" >&2
  exit 1
}
timed() { # timed <label> <command...>: runs it and prints how long it took
  local label=$1 t
  shift
  t=$(date +%s)
  "$@"
  say "$label took $(($(date +%s) - t)) s"
}

[ "$(id -u)" = 0 ] || die "must run as root (buildah with --isolation chroot and debootstrap need it); uid is $(id -u)"
for tool in buildah debootstrap node npm; do
  command -v "$tool" >/dev/null || die "'$tool' not found; install it (apt-get install -y buildah debootstrap)"
done
NODE_BIN="$(readlink -f "$(command -v node)")"
NODE_VERSION="$(node -p process.version)"
case "$NODE_VERSION" in v20.*) ;; *) die "the images need Node.js 20; this machine's node ($NODE_BIN) is $NODE_VERSION" ;; esac
NODE_PREFIX="$(dirname "$(dirname "$NODE_BIN")")"
NPM_DIR="$(readlink -f "$(dirname "$(readlink -f "$(command -v npm)")")/..")"
[ -d "$NODE_PREFIX/include/node" ] || die "node's headers are not at $NODE_PREFIX/include/node (node-gyp needs them offline)"
NPM_CACHE="$(npm config get cache)"
[ -d "$NPM_CACHE/_cacache" ] || die "npm's cache $NPM_CACHE/_cacache is empty: run 'npm ci' once (it fills the cache)"
# The image builds install with `npm ci --offline` from this machine's npm cache (mounted into the build).
NPM_FLAGS="${TENSILE_NPM_FLAGS:---offline}"

DRIVER="${TENSILE_BUILDAH_DRIVER:-}"
if [ -z "$DRIVER" ]; then
  DRIVER=vfs
  if grep -qw overlay /proc/filesystems; then DRIVER=overlay; fi
fi
B=(buildah --storage-driver "$DRIVER")
say "buildah $(buildah --version | awk '{print $3}'), storage driver $DRIVER, node $NODE_VERSION ($NODE_BIN), cache $CACHE"

CONTAINERS=()
cleanup() {
  local c
  for c in "${CONTAINERS[@]}"; do "${B[@]}" rm "$c" >/dev/null 2>&1 || true; done
}
trap cleanup EXIT
# from <image>: sets C to a new working container of <image>, removed on exit (not in a subshell: the list must
# outlive the call).
from() {
  C=$("${B[@]}" from --pull=never --quiet "$1")
  CONTAINERS+=("$C")
}
image_exists() { "${B[@]}" inspect --type image "$1" >/dev/null 2>&1; }
label() { "${B[@]}" inspect --type image --format "{{index .OCIv1.Config.Labels \"$2\"}}" "$1" 2>/dev/null || true; }

# 1. The Debian rootfs (cached as a tarball; the .debs are cached for a rebuild).
ROOTFS_TAR="$CACHE/$SUITE-minbase.tar"
make_rootfs() {
  local dir
  mkdir -p "$CACHE/debs"
  dir=$(mktemp -d "$CACHE/rootfs.XXXXXX")
  if ! debootstrap --variant=minbase --include="$RUNTIME_PACKAGES" --cache-dir="$CACHE/debs" \
    "$SUITE" "$dir" "$MIRROR" >"$CACHE/debootstrap.log" 2>&1; then
    rm -rf "$dir"
    die "debootstrap failed (log: $CACHE/debootstrap.log): $(tail -3 "$CACHE/debootstrap.log")"
  fi
  rm -rf "$dir"/var/cache/apt/archives/*.deb "$dir"/var/lib/apt/lists/*
  tar -C "$dir" --numeric-owner -cf "$ROOTFS_TAR.tmp" .
  mv "$ROOTFS_TAR.tmp" "$ROOTFS_TAR"
  rm -rf "$dir"
}
if [ ! -s "$ROOTFS_TAR" ]; then
  timed "debootstrap --variant=minbase $SUITE" make_rootfs
else
  say "rootfs cached: $ROOTFS_TAR"
fi

# 2. The bases: runtime = rootfs + node (+ the nonroot user 65532, as distroless); build = runtime + npm, node's
#    headers and a compiler. Rebuilt when this machine's node or the rootfs changed.
ROOTFS_ID="$(stat -c %Y "$ROOTFS_TAR")"
RECIPE=2 # bump when make_*_base change
make_runtime_base() {
  local c mnt
  from scratch
  c=$C
  mnt=$("${B[@]}" mount "$c")
  tar -C "$mnt" --numeric-owner -xf "$ROOTFS_TAR"
  install -D -m 0755 "$NODE_BIN" "$mnt/usr/bin/node"
  mkdir -p "$mnt/nodejs/bin" "$mnt/usr/local/bin"
  ln -sf /usr/bin/node "$mnt/nodejs/bin/node"
  ln -sf /usr/bin/node "$mnt/usr/local/bin/node"
  chroot "$mnt" /usr/sbin/useradd --uid 65532 --user-group --create-home --home-dir /home/nonroot \
    --shell /usr/sbin/nologin nonroot
  chroot "$mnt" /usr/bin/node -e 'require("node:crypto").randomUUID()' || die "node does not run in the Debian rootfs"
  "${B[@]}" umount "$c" >/dev/null
  "${B[@]}" config --env PATH=/usr/local/bin:/usr/bin:/bin:/usr/local/sbin:/usr/sbin:/sbin \
    --label "tensile.node=$NODE_VERSION" --label "tensile.rootfs=$ROOTFS_ID" --label "tensile.recipe=$RECIPE" \
    --cmd /bin/bash "$c"
  "${B[@]}" commit --quiet "$c" "$BASE_RUNTIME" >/dev/null
}
make_build_base() {
  local c mnt
  from "$BASE_RUNTIME"
  c=$C
  "${B[@]}" run --isolation chroot --network host "$c" -- sh -c \
    "echo 'deb $MIRROR $SUITE main' >/etc/apt/sources.list && apt-get update -qq \
     && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $BUILD_PACKAGES >/dev/null \
     && rm -rf /var/lib/apt/lists/*"
  mnt=$("${B[@]}" mount "$c")
  mkdir -p "$mnt/usr/include" "$mnt/usr/lib/node_modules"
  cp -a "$NODE_PREFIX/include/node" "$mnt/usr/include/"
  cp -a "$NPM_DIR" "$mnt/usr/lib/node_modules/npm"
  ln -sf ../lib/node_modules/npm/bin/npm-cli.js "$mnt/usr/bin/npm"
  ln -sf ../lib/node_modules/npm/bin/npx-cli.js "$mnt/usr/bin/npx"
  "${B[@]}" umount "$c" >/dev/null
  # node-gyp builds against these headers instead of downloading them from nodejs.org.
  "${B[@]}" config --env npm_config_nodedir=/usr "$c"
  "${B[@]}" commit --quiet "$c" "$BASE_BUILD" >/dev/null
}
fresh() { # fresh <image>: built from this rootfs and this node
  image_exists "$1" && [ "$(label "$1" tensile.node)" = "$NODE_VERSION" ] &&
    [ "$(label "$1" tensile.rootfs)" = "$ROOTFS_ID" ] && [ "$(label "$1" tensile.recipe)" = "$RECIPE" ] &&
    [ "${TENSILE_REBUILD_BASE:-0}" != 1 ]
}
if fresh "$BASE_RUNTIME" && fresh "$BASE_BUILD"; then
  say "bases cached: $BASE_RUNTIME, $BASE_BUILD"
else
  timed "runtime base $BASE_RUNTIME" make_runtime_base
  timed "build base $BASE_BUILD" make_build_base
fi

# 3. npm's cache holds every package of package-lock.json (the host's npm fetches what it lacks; once per lock).
LOCK_SUM="$(cat package.json package-lock.json .npmrc | sha256sum | cut -c1-16)"
fill_npm_cache() {
  local dir
  dir=$(mktemp -d)
  cp package.json package-lock.json .npmrc "$dir/"
  if ! (cd "$dir" && npm ci --prefer-offline --ignore-scripts --no-audit --no-fund >"$CACHE/npm-fill.log" 2>&1); then
    rm -rf "$dir"
    die "npm could not fill its cache for package-lock.json (log: $CACHE/npm-fill.log): $(tail -3 "$CACHE/npm-fill.log")"
  fi
  rm -rf "$dir"
  echo "$LOCK_SUM" >"$CACHE/npm-cache.lock-sum"
}
if [ "$(cat "$CACHE/npm-cache.lock-sum" 2>/dev/null)" = "$LOCK_SUM" ]; then
  say "npm cache holds package-lock.json ($LOCK_SUM)"
else
  timed "npm cache for package-lock.json" fill_npm_cache
fi

# 4. The images, from the Dockerfiles as real users build them, with the local bases and npm's cache.
bud() { # bud <dockerfile> <image>: the build's output goes to $CACHE/build-<file>.log
  local log
  log="$CACHE/build-$(basename "$1").log"
  if ! "${B[@]}" bud --isolation chroot --network host --layers --pull=never --force-rm \
    --build-arg BUILD_BASE="$BASE_BUILD" --build-arg RUNTIME_BASE="$BASE_RUNTIME" \
    --build-arg NPM_CI_FLAGS="$NPM_FLAGS --cache /npm-cache" --volume "$NPM_CACHE:/npm-cache" \
    -f "$1" -t "$2" . >"$log" 2>&1; then
    tail -30 "$log" >&2
    die "buildah bud -f $1 failed (log: $log)"
  fi
}
timed "operator image $OPERATOR" bud docker/Dockerfile.operator "$OPERATOR"
timed "agent image $AGENT" bud docker/Dockerfile.agent "$AGENT"

# 5. Checks, each inside a working container of the image, as the image's user.
check() { # check <what> <command...>
  local what=$1
  shift
  if ! out=$("$@" 2>&1); then die "$what: $(printf '%s' "$out" | tail -5)"; fi
  say "ok: $what"
}
in_image() { # in_image <container> <command...>
  local c=$1
  shift
  "${B[@]}" run --isolation chroot --network host "$c" -- "$@"
}
config() { # config <image> <field>: a field of the image's OCI config, as JSON
  "${B[@]}" inspect --type image "$1" |
    node -e 'const j = JSON.parse(require("fs").readFileSync(0, "utf8")); console.log(JSON.stringify(j.OCIv1.config[process.argv[1]] ?? null))' "$2"
}
expect() { # expect <what> <actual> <wanted>
  [ "$2" = "$3" ] || die "$1: got $2, expected $3"
  say "ok: $1 = $2"
}
nonroot() { # nonroot <container>: the user the image runs as is not root
  local uid
  uid=$(in_image "$1" /usr/bin/node -p 'process.getuid()')
  [ "$uid" != 0 ] || die "the image runs as root"
}

say "checking $OPERATOR"
from "$OPERATOR"
c=$C
expect "operator user" "$(config "$OPERATOR" User)" '"65532:65532"'
expect "operator entrypoint" "$(config "$OPERATOR" Entrypoint)" '["/nodejs/bin/node"]'
expect "operator cmd" "$(config "$OPERATOR" Cmd)" '["dist/agent/cli.js","operator"]'
check "operator runs as uid 65532" nonroot "$c"
check "operator: node dist/agent/cli.js --help" in_image "$c" /nodejs/bin/node dist/agent/cli.js --help
check "operator: node dist/agent/cli.js operator --help" in_image "$c" /nodejs/bin/node dist/agent/cli.js operator --help

say "checking $AGENT"
from "$AGENT"
c=$C
expect "agent user" "$(config "$AGENT" User)" '"65532:65532"'
expect "agent entrypoint" "$(config "$AGENT" Entrypoint)" '["tensile","run"]'
expect "agent working dir" "$(config "$AGENT" WorkingDir)" '"/workspace"'
check "agent runs as uid 65532" nonroot "$c"
check "agent: tensile --help" in_image "$c" tensile --help
check "agent: tensile run --help" in_image "$c" tensile run --help
check "agent: the native addon loads" in_image "$c" node --input-type=module -e \
  "const m = await import('/opt/tensile/dist/collective/native/addon.js'); const r = m.loadAddon();
   if (!r.ok) { console.error(r.reason); process.exit(1); } console.log(r.path);"
check "agent: /workspace is writable by the image's user" in_image "$c" sh -c 'touch /workspace/.w && rm /workspace/.w'
# Every script path the example manifests run must exist in the image (the first arg after the entrypoint).
scripts=$(grep -ho "args: \['[^']*'" examples/k8s/cpu-job.yaml examples/k8s/spot-job.yaml | sed "s/args: \['//;s/'$//" | sort -u)
[ -n "$scripts" ] || die "no args found in examples/k8s/{cpu,spot}-job.yaml"
for s in $scripts; do
  case "$s" in /*) ;; *) s="/workspace/$s" ;; esac
  check "agent: example script $s exists" in_image "$c" test -f "$s"
  check "agent: example script $s --help runs" in_image "$c" node "$s" --help
done

for img in "$OPERATOR" "$AGENT"; do
  say "size $img: $("${B[@]}" images --format '{{.Size}}' "$img" | head -1)"
done
say "done in $(($(date +%s) - T0)) s"
