#!/bin/sh
# Builds a Linux guest for a host with hardware virtualization: Debian's cloud
# kernel and a busybox initramfs. Nothing is installed: the packages are
# downloaded with apt-get and unpacked with dpkg -x into a work directory.
#
#   make-initramfs.sh [OUTDIR]        (default: ./linux-guest)
#
# Leaves OUTDIR/vmlinuz (the kernel's bzImage) and OUTDIR/initramfs.cpio.gz,
# and prints the vmm command line that boots them.
#
# Needs: apt-get and apt-cache with Debian bookworm's package lists
# (run `apt-get update` once if the packages are unknown), dpkg, cpio and
# gzip (`apt-get install cpio gzip`). Root is not needed.
#
# The initramfs /init mounts proc, sys and dev, prints a banner and starts a
# shell on the console; with vmmtest=poweroff on the kernel command line it
# powers the machine off instead, so a test can boot it unattended.
set -eu

die() { echo "make-initramfs.sh: $*" >&2; exit 1; }

for tool in apt-get apt-cache dpkg cpio gzip find sort; do
    command -v "$tool" >/dev/null 2>&1 ||
        die "needs $tool (Debian: apt-get install apt dpkg cpio gzip findutils coreutils)"
done

out=$(mkdir -p "${1:-linux-guest}" && cd "${1:-linux-guest}" && pwd)
work=$out/work
rm -rf "$work"
mkdir -p "$work/debs" "$work/kernel" "$work/busybox" "$work/root"

# linux-image-cloud-amd64 is a meta-package; the kernel itself is the
# versioned package it depends on (linux-image-6.1.0-NN-cloud-amd64).
kpkg=$(apt-cache depends linux-image-cloud-amd64 2>/dev/null |
    sed -n 's/^ *Depends: \(linux-image-[0-9][^ ]*-cloud-amd64\)$/\1/p' | head -n 1)
[ -n "$kpkg" ] || die "apt-cache does not know linux-image-cloud-amd64: run apt-get update (bookworm sources)"
echo "make-initramfs.sh: kernel package $kpkg"

(cd "$work/debs" && apt-get download "$kpkg" busybox-static) ||
    die "apt-get download $kpkg busybox-static failed"
dpkg -x "$work"/debs/"$kpkg"_*.deb "$work/kernel"
dpkg -x "$work"/debs/busybox-static_*.deb "$work/busybox"

vmlinuz=$(find "$work/kernel/boot" -name 'vmlinuz-*' | head -n 1)
[ -n "$vmlinuz" ] || die "no /boot/vmlinuz-* in $kpkg"
cp "$vmlinuz" "$out/vmlinuz"
kver=${vmlinuz##*/vmlinuz-}

# The root file system: busybox, one symlink per applet, and /init.
root=$work/root
mkdir -p "$root/bin" "$root/sbin" "$root/usr/bin" "$root/usr/sbin" "$root/proc" "$root/sys" \
    "$root/dev" "$root/tmp" "$root/root" "$root/etc"
cp "$work/busybox/bin/busybox" "$root/bin/busybox"
# busybox-static is a static x86-64 binary, so the build host can list its applets.
for applet in $("$root/bin/busybox" --list-full); do
    [ -e "$root/$applet" ] || ln -s /bin/busybox "$root/$applet"
done
# Only root can make the console node; /init copes without it (it mounts devtmpfs first).
mknod "$root/dev/console" c 5 1 2>/dev/null || true

cat > "$root/init" <<'INIT'
#!/bin/busybox sh
# Without /dev/console in the archive the kernel starts us with no output:
# mount devtmpfs first, then attach to the console.
/bin/busybox mount -t devtmpfs devtmpfs /dev 2>/dev/null
exec </dev/console >/dev/console 2>&1
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mkdir -p /dev/pts && mount -t devpts devpts /dev/pts

mem=$(sed -n 's/^MemTotal: *\([0-9]*\) kB/\1/p' /proc/meminfo)
echo "vmm-initramfs: Linux $(uname -r) up on $(nproc) cpu(s), $((mem / 1024)) MiB, $(cut -d' ' -f1 /proc/uptime) s after boot"

case " $(cat /proc/cmdline) " in
*" vmmtest=poweroff "*)
    echo "vmm-initramfs: vmmtest=poweroff, powering off"
    poweroff -f
    ;;
esac

echo "vmm-initramfs: shell on the console; 'poweroff -f' to stop"
while :; do
    setsid cttyhack sh -l
done
INIT
chmod 755 "$root/init"
"$root/bin/busybox" sh -n "$root/init" || die "the generated /init does not parse"

(cd "$root" && find . | LC_ALL=C sort | cpio -o -H newc -R 0:0 --reproducible --quiet) |
    gzip -9 -n > "$out/initramfs.cpio.gz"

echo "make-initramfs.sh: kernel $kver: $out/vmlinuz ($(wc -c < "$out/vmlinuz") bytes)"
echo "make-initramfs.sh: initramfs: $out/initramfs.cpio.gz ($(wc -c < "$out/initramfs.cpio.gz") bytes)"
echo "make-initramfs.sh: boot it (on a host with VT-x/AMD-V) with:"
echo "vmm run --kernel $out/vmlinuz --initrd $out/initramfs.cpio.gz --cmdline \"console=ttyS0 reboot=k panic=1\" --memory 512M --cpus 2"
echo "make-initramfs.sh: add vmmtest=poweroff to --cmdline for an unattended boot that powers off."
