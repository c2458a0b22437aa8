/* Each scenario returns a debug-exit code (EXIT_OK on success). */
#ifndef TESTGUEST_SCENARIOS_H
#define TESTGUEST_SCENARIOS_H

#include <stdint.h>

/* What the scenarios need from the PVH start_info (which the loader may place where the AP trampoline goes). */
struct boot_info {
    uint64_t rsdp_paddr; /* 0 if the loader gave none: scan the BIOS area */
};
extern struct boot_info boot_info;

uint32_t scenario_smp(void);
uint32_t scenario_timers(void);
uint32_t scenario_retimer(void);
uint32_t scenario_reboot(void);
uint32_t scenario_chaos(void);
uint32_t scenario_poweroff(void);
uint32_t scenario_pic(void);
uint32_t scenario_apicstorm(void);
uint32_t scenario_fastest(void);
uint32_t scenario_disk(void);

#endif
