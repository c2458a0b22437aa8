#!/bin/sh
# Boots the test guest under QEMU, the reference peer, and exits with the
# guest's own debug-exit code (QEMU reports (code << 1) | 1; this undoes it).
#
#   run-qemu.sh [-e ELF] [-m microvm|pc] [-s CPUS] [-r] [-t SECONDS] "test=NAME key=value ..."
#
#   -e  the guest ELF (default: build/release/guest-images/testguest.elf)
#   -m  microvm: no PIT/PIC/RTC, fast start (boot, smp)
#       pc:      i440FX with PIT, RTC, HPET, i8042 and SeaBIOS (timers, retimer, reboot)
#   -s  number of vCPUs (default 1)
#   -r  let the guest reboot (test=reboot); otherwise a reset ends QEMU
#   -t  give up after this many seconds (default 60): exit 124
#
# Needs qemu-system-x86_64 (Debian: qemu-system-x86) and a usable /dev/kvm.
set -eu

elf=build/release/guest-images/testguest.elf
machine=microvm
cpus=1
reboot=0
limit=60
while getopts e:m:s:rt: opt; do
    case $opt in
    e) elf=$OPTARG ;;
    m) machine=$OPTARG ;;
    s) cpus=$OPTARG ;;
    r) reboot=1 ;;
    t) limit=$OPTARG ;;
    *) sed -n '2,14p' "$0"; exit 2 ;;
    esac
done
shift $((OPTIND - 1))
[ $# -eq 1 ] || { sed -n '2,14p' "$0"; exit 2; }
[ -r "$elf" ] || { echo "run-qemu.sh: no guest ELF at $elf (build the testguest target, or pass -e)" >&2; exit 2; }

case $machine in
microvm)
    # qemu64 plus the TSC-deadline timer, which QEMU's default model leaves out.
    set -- -M microvm,accel=kvm,kernel-irqchip=split,pit=off,pic=off,rtc=off,isa-serial=on \
        -cpu qemu64,+tsc-deadline -nodefaults -no-user-config -append "$1" ;;
pc)
    set -- -M pc,accel=kvm,kernel-irqchip=split -cpu qemu64,+tsc-deadline -append "$1" ;;
*)
    echo "run-qemu.sh: unknown machine $machine" >&2; exit 2 ;;
esac
[ "$reboot" = 1 ] || set -- "$@" -no-reboot

status=0
timeout "$limit" qemu-system-x86_64 "$@" -smp "$cpus" -m 64 -display none -serial stdio \
    -device isa-debug-exit,iobase=0xf4,iosize=4 -kernel "$elf" || status=$?
case $status in
124) echo "run-qemu.sh: no exit within ${limit}s" >&2; exit 124 ;;
0) echo "run-qemu.sh: QEMU exited without the debug-exit device (reset with -no-reboot?)" >&2; exit 125 ;;
esac
if [ $((status & 1)) -eq 1 ]; then
    exit $((status >> 1))
fi
exit "$status"
