#!/usr/bin/env bash
# The main job: installs what is missing, builds vmm, fetches Debian's cloud
# kernel and builds the project's busybox initramfs (guest-images/linux/,
# cached in build/release/linux-guest), and boots Linux under vmm with two
# vCPUs, its console on this terminal.
#
#   tools/run.sh                  Linux; a shell when stdin is a terminal,
#                                 otherwise the in-guest self-check (CPUs,
#                                 memory, clocks, RTC, HPET, the local timer),
#                                 whose result is the exit status
#   tools/run.sh --check          the self-check even on a terminal
#   tools/run.sh --root-disk      Linux with its root on a virtio-blk disk
#                                 (root=/dev/vda rw): build/release/linux-guest/
#                                 root-disk.ext4, copied from the ext4 image
#                                 make-guest builds on first use and kept, so
#                                 what the guest writes there stays (delete
#                                 it to start afresh)
#   tools/run.sh --test-guest     the project's own test guest instead: every
#                                 vCPU started, then every timer's rate and
#                                 lateness (PIT, RTC, HPET, LAPIC)
#   tools/run.sh [...] -- ARGS    ARGS go to `vmm run` (e.g. --cpus 4)
#
# Exit status: 0 when the guest passed (or the shell was left with
# poweroff), 1 when a check failed, else vmm's or tools/kvm-lab's status.
# The guest runs on this host's /dev/kvm where it is usable, and otherwise
# inside the nested KVM lab (tools/kvm-lab), which says so in one line.
set -euo pipefail
cd "$(dirname "$0")/.."

linux_guest=build/release/linux-guest
vmm=build/release/vmm/vmm

# The part that needs /dev/kvm; tools/kvm-lab runs it here or in the lab.
if [ "${1:-}" = "--guest-part" ]; then
  what=$2
  shift 2
  disk_args=()
  if [ "${1:-}" = --root-disk ]; then disk_args=(--disk "$2"); shift 2; fi
  case $what in
  linux-shell | linux-check)
    cmdline="console=ttyS0 quiet panic=-1"
    if [ "$what" = linux-shell ]; then cmdline+=" vmm.then=shell"; else cmdline+=" vmm.check"; fi
    if [ ${#disk_args[@]} -gt 0 ]; then cmdline+=" root=/dev/vda rw"; fi
    status=0
    "$vmm" run --kernel "$linux_guest/kernel/vmlinuz" --initrd "$linux_guest/initramfs.cpio.gz" \
      --cpus 2 --memory 512M --debug-exit "${disk_args[@]}" --cmdline "$cmdline" "$@" || status=$?
    # The self-check powers off when it passes and reports a failure through
    # the debug-exit port: status 3 = (1 << 1) | 1.
    case $status in
    0) [ "$what" = linux-check ] && echo "run: Linux passed its self-check" ;;
    3) echo "run: Linux failed its self-check (the VMMCHECK lines above say which)" >&2; exit 1 ;;
    *) echo "run: vmm exited with status $status" >&2 ;;
    esac
    exit "$status"
    ;;
  test-guest)
    # The guest reports success through the debug-exit port: status 1 = (0 << 1) | 1.
    for scenario in smp timers; do
      status=0
      "$vmm" run --kernel build/release/guest-images/testguest.elf --cpus 2 --memory 64M --debug-exit \
        --cmdline "test=$scenario" "$@" || status=$?
      if [ "$status" -ne 1 ]; then
        echo "run: test=$scenario failed (vmm exit status $status)" >&2
        exit 1
      fi
    done
    echo "run: the test guest passed"
    exit 0
    ;;
  esac
  echo "run: unknown guest part '$what'" >&2
  exit 2
fi

part=
root_disk=
while [ $# -gt 0 ]; do
  case $1 in
  --test-guest) part=test-guest ;;
  --root-disk) root_disk=$linux_guest/root-disk.ext4 ;;
  --check) part=linux-check ;;
  --) shift; break ;;
  -h | --help) sed -n '2,/^set -e/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
  *) echo "run: unknown option '$1' (try --help; arguments for vmm go after --)" >&2; exit 2 ;;
  esac
  shift
done
if [ -z "$part" ]; then
  if [ -t 0 ] && [ -t 1 ]; then part=linux-shell; else part=linux-check; fi
fi
if [ -n "$root_disk" ] && [ "$part" = test-guest ]; then
  echo "run: --root-disk is for Linux, not the test guest" >&2
  exit 2
fi

tools/setup.sh
cmake --preset release >/dev/null
if [ "$part" = test-guest ]; then
  cmake --build --preset release -j "$(nproc)" --target vmm testguest
else
  cmake --build --preset release -j "$(nproc)" --target vmm
  guest-images/linux/make-guest "$linux_guest" >/dev/null
fi
if [ -z "$root_disk" ]; then
  exec tools/kvm-lab --prefer-host --retry-lab-hang -- tools/run.sh --guest-part "$part" "$@"
fi
[ -e "$root_disk" ] || cp --sparse=always "$linux_guest/rootfs.ext4" "$root_disk"
# The lab sees the project read-only but for --rw folders: the guest writes its root.
exec tools/kvm-lab --prefer-host --retry-lab-hang --rw "$PWD/$linux_guest" -- \
  tools/run.sh --guest-part "$part" --root-disk "$root_disk" "$@"
