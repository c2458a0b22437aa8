/*
 * The PVH start-of-day structure (Xen public interface,
 * arch-x86/hvm/start_info.h), version 0 fields plus the version 1 memory
 * map fields. EBX points at it on entry.
 */
#ifndef TESTGUEST_START_INFO_H
#define TESTGUEST_START_INFO_H

#include <stdint.h>

#define HVM_START_MAGIC 0x336ec578u /* "xEn3" with the 0x80 bit of the 'E' set */

struct hvm_start_info {
    uint32_t magic;
    uint32_t version;
    uint32_t flags;
    uint32_t nr_modules;
    uint64_t modlist_paddr;
    uint64_t cmdline_paddr;  /* NUL-terminated, 0 = none */
    uint64_t rsdp_paddr;     /* 0 = not given: scan the BIOS area */
    uint64_t memmap_paddr;   /* version >= 1 */
    uint32_t memmap_entries; /* version >= 1 */
    uint32_t reserved;
};

_Static_assert(sizeof(struct hvm_start_info) == 56, "start_info layout");

#endif
