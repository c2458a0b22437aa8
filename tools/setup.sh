#!/usr/bin/env bash
# Installs, from Debian's archive, whatever this project needs that is missing.
# Safe to run again: already-installed packages are not touched.
set -euo pipefail

packages=(
  # build
  g++ cmake ninja-build pkg-config
  # libraries
  liburing-dev libspdlog-dev libfmt-dev libcli11-dev nlohmann-json3-dev libseccomp-dev
  libgtest-dev libgmock-dev libbenchmark-dev linux-libc-dev
  # tests and tools: the Debian test kernel is fetched with apt-get download
  # and its vmlinux unpacked with lz4; QEMU is the reference the guest is
  # checked against; cpio/busybox build the real-host initramfs; e2fsprogs
  # builds and checks the Linux disk tests' ext4 images without root
  lz4 cpio busybox-static qemu-system-x86 rt-tests gnuplot-nox python3 e2fsprogs
  # fuzzing (tools/fuzz): clang with libFuzzer's runtime, llvm-cov and llvm-profdata
  clang-14 libclang-rt-14-dev llvm-14
)

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi

sudo=""
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null; then sudo="sudo"; else
    echo "setup: need root (or sudo) to install: ${missing[*]}" >&2
    exit 1
  fi
fi
echo "setup: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
