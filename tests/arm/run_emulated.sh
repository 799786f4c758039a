#!/usr/bin/env bash
# Runs converted lowbit models on an emulated Raspberry Pi and checks that the
# outputs equal the x86 ones.
#
#   sudo tests/arm/run_emulated.sh [aarch64] [armhf]     (default: both)
#
# For each target it
#   1. makes (cold, ~3-4 min) or reuses a Debian bookworm root for the Pi's
#      userland (Pi OS is bookworm: Python 3.11, glibc 2.36) with
#      `debootstrap --foreign` + qemu-user-static, with a venv holding the
#      runtime's dependencies: numpy + ai-edge-litert (aarch64 wheels) or
#      Debian's python3-numpy + tflite-runtime 2.14 (armhf). The root is cached
#      as a tarball under $LOWBIT_ARM_CACHE and restored from it in seconds;
#   2. cross-builds the lowbit-tf-runtime wheel from this tree
#      (runtime/build_wheels.py) and pip-installs it into the root the way the
#      README tells a user (plain `pip install <wheel>`, dependencies resolved
#      from its metadata). armhf plays 32-bit Pi OS on a 64-bit kernel (the
#      usual case on a Pi 4/5): an LD_PRELOAD shim (tests/arm/uname_machine.c)
#      makes uname() report "aarch64" to the 32-bit userland, as that kernel
#      does (qemu-arm says "armv7l"; its QEMU_UNAME sets only the release), so
#      pip sees platform_machine == "aarch64" while its interpreter is 32-bit;
#      tflite-runtime is uninstalled first, so that the wheel's metadata must
#      pull it in, and `pip check` then checks the installed requirements both
#      under "aarch64" and under qemu's "armv7l" (a 32-bit kernel: Pi 2/3).
#      Not simulated: the kernel itself (qemu-user on the host's), a 64-bit
#      kernel's /proc/cpuinfo for 32-bit tasks (the bind-mounted file below is a
#      32-bit kernel's) and a Cortex-A72 in AArch32 (qemu-arm has no such CPU);
#   3. converts small binary models on this machine (tests/arm/make_models.py,
#      needs TensorFlow here) and records their x86 outputs;
#   4. chroots into the root under qemu (QEMU_CPU=cortex-a72 for aarch64, a
#      Pi 4; cortex-a7 for armhf, a Pi 2), with an ARM /proc/cpuinfo bind-mounted
#      over the host's (XNNPACK's CPU detection crashes on the x86 one), and
#      runs tests/arm/check_models.py: lowbit-only models must match bit for
#      bit, models with float builtins within 1e-5, and the kernel path that
#      runs by default (lowbit_tf.lite.kernel_path()) must be "neon".
#
# Needs root (debootstrap, chroot, mount) and a Debian/Ubuntu host; installs
# debootstrap, qemu-user-static, binfmt-support and the cross compilers with
# apt-get when missing.
#
# Environment:
#   LOWBIT_ARM_CACHE    cache directory (default ~/.cache/lowbit-arm): roots,
#                       tarballs, downloaded wheels, built wheels, models
#   LOWBIT_ARM_MIRROR   Debian mirror (default http://deb.debian.org/debian)
#   LOWBIT_ARM_KERNELS  kernel choices to check (default: default, reference and
#                       every path of the Arm library's kernel table;
#                       a path the CPU or build lacks falls back down the table)
#   LOWBIT_ARMHF_UNAME_MACHINE  what uname() says in the armhf root (default
#                       aarch64: a 64-bit kernel; empty: qemu's own, armv7l)
#   PYTHON              host Python with TensorFlow + lowbit-tf (default python3)
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
HERE=$REPO/tests/arm
CACHE=${LOWBIT_ARM_CACHE:-$HOME/.cache/lowbit-arm}
MIRROR=${LOWBIT_ARM_MIRROR:-http://deb.debian.org/debian}
KERNELS=${LOWBIT_ARM_KERNELS:-}
PYTHON=${PYTHON:-python3}
SUITE=bookworm
# Bump when the recipe of the roots changes, to rebuild cached roots.
RECIPE=1
ROOTS=$CACHE/roots
WORK=$CACHE/work

log() { printf '[arm %s] %s\n' "$(date +%T)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }
# The machine cannot provide what the check needs (packages, wheels or a Debian
# mirror out of reach): exit 77, which the pytest wrapper reports as a skip.
unavailable() { log "UNAVAILABLE: $*"; exit 77; }

# --- per-target settings -----------------------------------------------------
set_target() {
  TARGET=$1
  case $TARGET in
    aarch64)
      DEB_ARCH=arm64; BINFMT=qemu-aarch64; QEMU_STATIC=qemu-aarch64-static
      CPU=${LOWBIT_QEMU_CPU_AARCH64:-cortex-a72}
      WHEEL_TARGET=aarch64
      EXTRA_DEBS=""
      VENV_ARGS=""
      # ai-edge-litert's aarch64 wheels are tagged manylinux_2_27 only, and
      # `pip download --platform` matches tags exactly.
      PIP_PLATFORMS="manylinux_2_27_aarch64 manylinux_2_28_aarch64 manylinux2014_aarch64 manylinux_2_17_aarch64"
      DEPS="numpy ai-edge-litert"
      DEPS_NO_DEPS=""
      UNAME_MACHINE=""
      REINSTALL=""
      ;;
    armhf)
      DEB_ARCH=armhf; BINFMT=qemu-arm; QEMU_STATIC=qemu-arm-static
      CPU=${LOWBIT_QEMU_CPU_ARMHF:-cortex-a7}
      WHEEL_TARGET=armv7l
      # No numpy wheels for armv7 on PyPI: Debian's python3-numpy (1.24),
      # seen through a venv with system site packages.
      EXTRA_DEBS="python3-numpy"
      VENV_ARGS="--system-site-packages"
      PIP_PLATFORMS="manylinux_2_34_armv7l linux_armv7l"
      DEPS=""
      DEPS_NO_DEPS="tflite-runtime==2.14.0"
      # 32-bit Pi OS on a 64-bit kernel (see the top); the wheel must bring
      # tflite-runtime in itself.
      UNAME_MACHINE=${LOWBIT_ARMHF_UNAME_MACHINE-aarch64}
      SHIM_CC=arm-linux-gnueabihf-gcc
      REINSTALL="tflite-runtime"
      ;;
    *) die "unknown target $TARGET (aarch64 or armhf)" ;;
  esac
  ROOT=$ROOTS/$TARGET
  ROOT_KEY="recipe=$RECIPE suite=$SUITE arch=$DEB_ARCH debs=python3,python3-venv,$EXTRA_DEBS deps=$DEPS $DEPS_NO_DEPS"
  if command -v zstd >/dev/null; then
    TARBALL=$CACHE/$SUITE-$DEB_ARCH-root.tar.zst; COMPRESS="zstd -T0 -3 -q"; DECOMPRESS="zstd -dc"
  else
    TARBALL=$CACHE/$SUITE-$DEB_ARCH-root.tar.gz; COMPRESS="gzip -1"; DECOMPRESS="gzip -dc"
  fi
}

# --- host -------------------------------------------------------------------
ensure_host() {
  [[ $(id -u) == 0 ]] || die "needs root (debootstrap, chroot and mount)"
  local need=()
  command -v debootstrap >/dev/null || need+=(debootstrap)
  command -v qemu-aarch64-static >/dev/null || need+=(qemu-user-static)
  command -v update-binfmts >/dev/null || need+=(binfmt-support)
  command -v aarch64-linux-gnu-g++ >/dev/null || need+=(g++-aarch64-linux-gnu libc6-dev-arm64-cross)
  command -v arm-linux-gnueabihf-g++ >/dev/null || need+=(g++-arm-linux-gnueabihf libc6-dev-armhf-cross)
  command -v zstd >/dev/null || need+=(zstd)
  if ((${#need[@]})); then
    command -v apt-get >/dev/null || unavailable "missing: ${need[*]} (and no apt-get)"
    log "installing ${need[*]}"
    apt-get update -qq || unavailable "apt-get update failed"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null \
      || unavailable "apt-get install ${need[*]} failed"
  fi
  if [[ ! -e /proc/sys/fs/binfmt_misc/status ]]; then
    mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc
  fi
}

ensure_binfmt() {
  local entry=/proc/sys/fs/binfmt_misc/$BINFMT
  if ! [[ -e $entry ]] || ! grep -qx enabled "$entry"; then
    update-binfmts --enable "$BINFMT" >/dev/null 2>&1 || true
  fi
  grep -qx enabled "$entry" 2>/dev/null || die "binfmt_misc entry $BINFMT is not enabled"
}

# The interpreter must be reachable inside the root unless binfmt_misc holds
# it open already (flag F, as Debian's qemu-user-static registers it).
ensure_interpreter_in_root() {
  local root=$1 entry=/proc/sys/fs/binfmt_misc/$BINFMT interp
  grep -q '^flags:.*F' "$entry" && return 0
  interp=$(sed -n 's/^interpreter //p' "$entry")
  mkdir -p "$root$(dirname "$interp")"
  cp "$(command -v "$QEMU_STATIC")" "$root$interp"
}

# --- mounts -----------------------------------------------------------------
# Unmounts everything below $ROOTS, deepest first. Runs on exit, so that an
# interrupted run leaves no mount behind (and nothing below a root that is
# about to be deleted is still mounted).
unmount_under() {
  local prefix=$1 m
  [[ -d /proc/self ]] || return 0
  while read -r m; do
    [[ -n $m ]] || continue
    umount "$m" 2>/dev/null || umount -l "$m" || log "could not unmount $m"
  done < <(awk -v p="$prefix/" 'index($2, p) == 1 {print $2}' /proc/self/mounts | sort -r)
}
cleanup() { unmount_under "$ROOTS"; }
trap cleanup EXIT
trap 'exit 130' INT TERM

safe_rm_root() {
  local dir=$1
  [[ -n $dir && $dir == "$ROOTS"/* ]] || die "refusing to delete $dir"
  unmount_under "$dir"
  if awk -v p="$dir/" 'index($2, p) == 1 {found=1} END {exit !found}' /proc/self/mounts; then
    die "$dir still has mounts below it; not deleting"
  fi
  rm -rf --one-file-system "$dir"
}

mount_root() {
  local root=$1
  mount -t proc proc "$root/proc"
  mount --bind /dev "$root/dev"
  # XNNPACK (cpuinfo) parses /proc/cpuinfo; the host's x86 one makes it crash.
  mount --bind "$HERE/cpuinfo-$TARGET" "$root/proc/cpuinfo"
  # It also reads the CPU lists from sysfs; the root gets no sysfs (the host's
  # would describe x86 CPUs), just these two files for the 4 cores above.
  mkdir -p "$root/sys/devices/system/cpu"
  echo 0-3 >"$root/sys/devices/system/cpu/possible"
  echo 0-3 >"$root/sys/devices/system/cpu/present"
}

# Runs a command inside the root, with a clean environment.
in_root() {
  local root=$1; shift
  env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root \
    LANG=C.UTF-8 QEMU_CPU="$CPU" PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1 ${LOWBIT_NUM_THREADS:+LOWBIT_NUM_THREADS=$LOWBIT_NUM_THREADS} \
    chroot "$root" "$@"
}

# --- the root ----------------------------------------------------------------
download_wheels() {
  local dest=$CACHE/wheels-$TARGET plat_args=() p
  if [[ -f $dest/.key && $(cat "$dest/.key") == "$ROOT_KEY" ]]; then return 0; fi
  rm -rf "$dest"; mkdir -p "$dest"
  for p in $PIP_PLATFORMS; do plat_args+=(--platform "$p"); done
  log "downloading $TARGET wheels: $DEPS $DEPS_NO_DEPS"
  if [[ -n $DEPS ]]; then
    "$PYTHON" -m pip download -q --dest "$dest" --only-binary=:all: --python-version 3.11 \
      --implementation cp "${plat_args[@]}" $DEPS || unavailable "pip download $DEPS failed"
  fi
  if [[ -n $DEPS_NO_DEPS ]]; then
    "$PYTHON" -m pip download -q --dest "$dest" --only-binary=:all: --python-version 3.11 \
      --implementation cp "${plat_args[@]}" --no-deps $DEPS_NO_DEPS \
      || unavailable "pip download $DEPS_NO_DEPS failed"
  fi
  echo "$ROOT_KEY" >"$dest/.key"
}

build_root() {
  local tmp=$ROOTS/$TARGET.new include=python3,python3-venv
  [[ -n $EXTRA_DEBS ]] && include+=,$EXTRA_DEBS
  safe_rm_root "$tmp"
  mkdir -p "$tmp"
  log "debootstrap $SUITE $DEB_ARCH (first stage, on the host)"
  debootstrap --foreign --arch="$DEB_ARCH" --variant=minbase --include="$include" \
    "$SUITE" "$tmp" "$MIRROR" >"$WORK/debootstrap-$TARGET.log" 2>&1 \
    || { tail -20 "$WORK/debootstrap-$TARGET.log"; unavailable "debootstrap (download) failed"; }
  ensure_interpreter_in_root "$tmp"
  log "debootstrap second stage (emulated)"
  in_root "$tmp" /debootstrap/debootstrap --second-stage >>"$WORK/debootstrap-$TARGET.log" 2>&1 \
    || { tail -20 "$WORK/debootstrap-$TARGET.log"; die "debootstrap --second-stage failed"; }
  unmount_under "$tmp"   # the second stage may leave its own /proc mount
  download_wheels
  mkdir -p "$tmp/opt/lowbit/wheels"
  cp "$CACHE/wheels-$TARGET"/*.whl "$tmp/opt/lowbit/wheels/"
  log "venv + runtime dependencies (emulated pip)"
  mount_root "$tmp"
  # shellcheck disable=SC2086
  in_root "$tmp" python3 -m venv $VENV_ARGS /opt/lowbit/venv
  if [[ -n $DEPS ]]; then
    # shellcheck disable=SC2086
    in_root "$tmp" /opt/lowbit/venv/bin/pip install -q --no-index \
      --find-links /opt/lowbit/wheels $DEPS
  fi
  if [[ -n $DEPS_NO_DEPS ]]; then
    # shellcheck disable=SC2086
    in_root "$tmp" /opt/lowbit/venv/bin/pip install -q --no-index --no-deps \
      --find-links /opt/lowbit/wheels $DEPS_NO_DEPS
  fi
  unmount_under "$tmp"
  rm -rf "$tmp/var/cache/apt/archives/"*.deb "$tmp/var/lib/apt/lists/"* "$tmp/debootstrap"
  echo "$ROOT_KEY" >"$tmp/.lowbit-root-key"
  log "saving $TARBALL"
  tar -C "$tmp" --one-file-system -cf - . | $COMPRESS >"$TARBALL.tmp"
  mv "$TARBALL.tmp" "$TARBALL"
  echo "$ROOT_KEY" >"$TARBALL.key"
  safe_rm_root "$ROOT"
  mv "$tmp" "$ROOT"
}

prepare_root() {
  if [[ -f $ROOT/.lowbit-root-key && $(cat "$ROOT/.lowbit-root-key") == "$ROOT_KEY" ]]; then
    log "$TARGET root: reusing $ROOT"
  elif [[ -f $TARBALL && -f $TARBALL.key && $(cat "$TARBALL.key") == "$ROOT_KEY" ]]; then
    log "$TARGET root: restoring from $TARBALL"
    safe_rm_root "$ROOT"
    mkdir -p "$ROOT"
    $DECOMPRESS "$TARBALL" | tar -C "$ROOT" -xf -
  else
    log "$TARGET root: building (cold, a few minutes)"
    build_root
  fi
  ensure_interpreter_in_root "$ROOT"
}

# --- what is tested ----------------------------------------------------------
tree_hash() {  # hash of the files under the given paths (relative to REPO)
  (cd "$REPO" && find "$@" -type f \( -name '*.py' -o -name '*.cc' -o -name '*.h' \
      -o -name '*.cmake' -o -name 'CMakeLists.txt' -o -name '*.toml' \) \
      -not -path '*/build/*' -not -path '*/__pycache__/*' -print0 2>/dev/null \
    | sort -z | xargs -0 sha256sum | sha256sum | cut -c1-16)
}

WHEEL_SOURCES=(custom_ops lowbit_tf/__init__.py lowbit_tf/lite.py lowbit_tf/_native/__init__.py runtime)

runtime_wheel() {  # prints the path of the runtime wheel for $WHEEL_TARGET
  local key dir
  key=$(tree_hash "${WHEEL_SOURCES[@]}")
  dir=$WORK/wheels/$WHEEL_TARGET-$key
  if ! compgen -G "$dir/*.whl" >/dev/null; then
    log "building the lowbit-tf-runtime wheel for $WHEEL_TARGET"
    rm -rf "$WORK/wheels/$WHEEL_TARGET-"*
    "$PYTHON" "$REPO/runtime/build_wheels.py" "$WHEEL_TARGET" -o "$dir" >&2 \
      || die "building the $WHEEL_TARGET wheel failed"
  fi
  compgen -G "$dir/*.whl" | head -1
}

MODELS=""
make_models() {
  local key native
  key=$(tree_hash "${WHEEL_SOURCES[@]}" lowbit_tf converter models tests/arm/make_models.py \
    tests/helpers/keras_helpers.py)
  MODELS=$WORK/models-$key
  [[ -f $MODELS/manifest.json ]] && return 0
  rm -rf "$WORK/models-"*
  native=$WORK/native-build-$(printf %s "$REPO" | sha256sum | cut -c1-8)  # one per checkout
  log "building the x86 delegate library for the expected outputs"
  cmake -S "$REPO/custom_ops" -B "$native" -DCMAKE_BUILD_TYPE=Release \
    -DLOWBIT_OUTPUT_DIR="$native/out" >/dev/null
  cmake --build "$native" --target lowbit_tflite --parallel "$(nproc)" >/dev/null
  log "converting the models on the host ($PYTHON)"
  PYTHONPATH=$REPO:$REPO/converter:$REPO/models${PYTHONPATH:+:$PYTHONPATH} \
    LOWBIT_TFLITE_LIBRARY=$native/out/liblowbit_tflite.so \
    "$PYTHON" "$HERE/make_models.py" "$MODELS.tmp" >&2 || die "make_models.py failed"
  mv "$MODELS.tmp" "$MODELS"
}

run_target() {
  local start=$SECONDS wheel
  set_target "$1"
  ensure_binfmt
  prepare_root
  wheel=$(runtime_wheel)
  log "$TARGET: installing $(basename "$wheel")"
  rm -rf "$ROOT/opt/lowbit/run"
  mkdir -p "$ROOT/opt/lowbit/run"
  cp "$wheel" "$ROOT/opt/lowbit/run/"
  cp -r "$MODELS" "$ROOT/opt/lowbit/run/models"
  cp "$HERE/check_models.py" "$ROOT/opt/lowbit/run/"
  # `as_device`: run a command as the device's userland sees it (uname).
  local as_device=()
  if [[ -n $UNAME_MACHINE ]]; then
    "$SHIM_CC" -shared -fPIC -O2 -o "$ROOT/opt/lowbit/run/uname_machine.so" \
      "$HERE/uname_machine.c" || die "building the uname shim failed"
    as_device=(env LD_PRELOAD=/opt/lowbit/run/uname_machine.so "LOWBIT_UNAME_MACHINE=$UNAME_MACHINE")
  fi
  mount_root "$ROOT"
  log "$TARGET: uname -m says $(in_root "$ROOT" "${as_device[@]}" uname -m), Python's \
platform.machine() $(in_root "$ROOT" "${as_device[@]}" python3 -c 'import platform; print(platform.machine())')"
  # shellcheck disable=SC2086
  in_root "$ROOT" /opt/lowbit/venv/bin/pip uninstall -q -y lowbit-tf-runtime $REINSTALL \
    >/dev/null 2>&1 || true
  # As the README says (`pip install <wheel>`); dependencies resolve from what
  # the root holds (no index): checks the wheel's tag and its Requires-Dist on
  # the target.
  in_root "$ROOT" "${as_device[@]}" /opt/lowbit/venv/bin/pip install -q --no-index \
    --find-links /opt/lowbit/wheels "/opt/lowbit/run/$(basename "$wheel")" \
    || die "pip install $(basename "$wheel") failed"
  in_root "$ROOT" "${as_device[@]}" /opt/lowbit/venv/bin/pip check \
    || die "pip check failed${UNAME_MACHINE:+ (uname -m: $UNAME_MACHINE)}"
  if [[ -n $UNAME_MACHINE ]]; then
    in_root "$ROOT" /opt/lowbit/venv/bin/pip check || die "pip check failed (qemu's uname)"
  fi
  log "$TARGET: running the models (QEMU_CPU=$CPU)"
  local status=0
  in_root "$ROOT" "${as_device[@]}" /opt/lowbit/venv/bin/python /opt/lowbit/run/check_models.py \
    /opt/lowbit/run/models ${KERNELS:+--kernels "$KERNELS"} --expect-default-kernel neon \
    || status=$?
  unmount_under "$ROOT"
  log "$TARGET: $([[ $status == 0 ]] && echo passed || echo FAILED) in $((SECONDS - start)) s"
  return $status
}

main() {
  local targets=("$@") status=0 t
  ((${#targets[@]})) || targets=(aarch64 armhf)
  for t in "${targets[@]}"; do set_target "$t"; done  # validate names early
  ensure_host
  mkdir -p "$CACHE" "$ROOTS" "$WORK"
  exec 9>"$CACHE/lock"
  flock -w 1800 9 || die "another run holds $CACHE/lock"
  make_models
  for t in "${targets[@]}"; do
    run_target "$t" || status=1
  done
  return $status
}

main "$@"
