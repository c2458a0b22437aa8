#!/usr/bin/env bash
# Fetch Debian's cloud kernel for the boot-loader tests, without installing it.
#
#   tools/fetch-test-kernel.sh <dir>
#
# Leaves <dir>/vmlinuz (the bzImage) and <dir>/vmlinux (the uncompressed ELF,
# which carries the PVH entry note), <dir>/modules (the kernel's modules, for
# the Linux guest's initramfs) plus <dir>/PACKAGE naming the package they came
# from. When all are already there nothing is downloaded, so the ctest
# fixtures that call this cost nothing after the first run.
set -euo pipefail

die() { echo "fetch-test-kernel: $*" >&2; exit 1; }
# Anything that fails without its own message still says where.
trap 'echo "fetch-test-kernel: failed at line $LINENO: $BASH_COMMAND" >&2' ERR

[[ $# -eq 1 ]] || die "usage: $0 <output-dir>"
out_dir=$1

if [[ -s $out_dir/vmlinuz && -s $out_dir/vmlinux && -d $out_dir/modules ]]; then
  echo "fetch-test-kernel: cached in $out_dir ($(cat "$out_dir/PACKAGE" 2>/dev/null || echo unknown package))"
  exit 0
fi

as_root() {
  if [[ $(id -u) -eq 0 ]]; then "$@"; else sudo "$@"; fi
}

for tool in apt-get apt-cache dpkg-deb od dd; do
  command -v "$tool" >/dev/null || die "'$tool' not found; this script needs a Debian-based host"
done
if ! command -v lz4 >/dev/null; then
  echo "fetch-test-kernel: installing lz4 to unpack the kernel payload"
  as_root apt-get install -y -q lz4 >/dev/null || die "could not install the 'lz4' package"
fi

# The meta package tracks the current ABI; resolve it to the concrete image
# package so the download is one .deb with one version.
resolve_package() {
  apt-cache depends linux-image-cloud-amd64 2>/dev/null |
    sed -n 's/^ *Depends: \(linux-image-[0-9][^ ]*-cloud-amd64\)$/\1/p' | head -n 1
}

mkdir -p "$out_dir"
work=$(mktemp -d "$out_dir/.fetch.XXXXXX")
trap 'rm -rf "$work"' EXIT

# Resolves and downloads into $work; sets $package and $deb. Fails (without
# exiting) when the lists name nothing or a version the archive no longer has.
download() {
  package=$(resolve_package || true)
  [[ -n $package ]] || return 1
  echo "fetch-test-kernel: downloading $package"
  # apt-get download writes into the current directory. As root it warns that
  # the download is unsandboxed (the _apt user cannot write to $work); that
  # is harmless for a file we only unpack.
  (cd "$work" && apt-get download -q "$package" 2>&1 | grep -v -e '^W: Download is performed unsandboxed' >&2 || true)
  deb=$(find "$work" -maxdepth 1 -name "${package}_*.deb" | head -n 1)
  [[ -n $deb ]]
}

if ! download; then
  echo "fetch-test-kernel: package lists are empty or stale; running apt-get update"
  as_root apt-get update -q >/dev/null || die "apt-get update failed (is Debian's archive reachable?)"
  download || die "cannot download the kernel package that linux-image-cloud-amd64 depends on (${package:-none found})"
fi
echo "fetch-test-kernel: $(basename "$deb"): $(stat -c %s "$deb") bytes"

dpkg-deb -x "$deb" "$work/root" || die "cannot unpack $(basename "$deb")"
bzimage=$(find "$work/root/boot" -maxdepth 1 -name 'vmlinuz-*' | head -n 1)
[[ -n $bzimage ]] || die "$(basename "$deb") holds no /boot/vmlinuz-*"

# Little-endian unsigned integer of <width> bytes at <offset> in <file>.
read_le() { od -An -t "u$3" -j "$2" -N "$3" "$1" | tr -d ' '; }

# The compressed payload's place is in the setup header (boot protocol
# 2.08+): payload_offset at 0x248 counts from the protected-mode code, which
# starts after the boot sector and setup_sects sectors. The kernel build
# appends the uncompressed length as 4 little-endian bytes to the stream.
setup_sects=$(read_le "$bzimage" $((0x1F1)) 1)
[[ $setup_sects -ne 0 ]] || setup_sects=4
payload_offset=$(read_le "$bzimage" $((0x248)) 4)
payload_length=$(read_le "$bzimage" $((0x24C)) 4)
start=$(( (setup_sects + 1) * 512 + payload_offset ))
magic=$(od -An -t x1 -j "$start" -N 4 "$bzimage" | tr -d ' ')
case $magic in
  02214c18 | 04224d18) ;;  # LZ4 legacy frame (what the kernel uses) / LZ4 frame
  *) die "no LZ4 frame magic at the payload (found '$magic' at $start); is this kernel compressed with something else?" ;;
esac
expected_size=$(read_le "$bzimage" $((start + payload_length - 4)) 4)

dd if="$bzimage" of="$work/payload.lz4" iflag=skip_bytes,count_bytes \
  skip="$start" count="$((payload_length - 4))" status=none
lz4 -d -c "$work/payload.lz4" > "$work/vmlinux" || die "lz4 could not decompress the payload"
actual_size=$(stat -c %s "$work/vmlinux")
[[ $actual_size -eq $expected_size ]] ||
  die "decompressed vmlinux is $actual_size bytes, the bzImage says $expected_size"
[[ $(od -An -t x1 -N 4 "$work/vmlinux" | tr -d ' ') == 7f454c46 ]] || die "decompressed payload is not an ELF file"

cp "$bzimage" "$work/vmlinuz"
kver=${bzimage##*/vmlinuz-}
[[ -d $work/root/lib/modules/$kver/kernel ]] || die "$(basename "$deb") holds no /lib/modules/$kver"
mv "$work/root/lib/modules/$kver" "$work/modules"
echo "$(basename "$deb" .deb)" > "$work/PACKAGE"
# Rename into place last, so an interrupted run never leaves a half image
# that the cache check would accept.
rm -rf "$out_dir/modules"
mv -f "$work/modules" "$out_dir/modules"
mv -f "$work/PACKAGE" "$out_dir/PACKAGE"
mv -f "$work/vmlinux" "$out_dir/vmlinux"
mv -f "$work/vmlinuz" "$out_dir/vmlinuz"
echo "fetch-test-kernel: $out_dir/vmlinuz ($(stat -c %s "$out_dir/vmlinuz") bytes)," \
  "$out_dir/vmlinux ($actual_size bytes)"
