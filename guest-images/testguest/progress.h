/*
 * Boot-progress milestones and debug-exit codes.
 *
 * Shared by C and assembly, so it holds only #defines.
 *
 * Milestones are a 32-bit outl of the code to PROGRESS_PORT. QEMU has nothing
 * there and drops the write; the project's VMM timestamps each one, which
 * shows where a slow or stuck boot spends its time.
 */
#ifndef TESTGUEST_PROGRESS_H
#define TESTGUEST_PROGRESS_H

#define PROGRESS_PORT 0x0ff0

#define MS_ENTRY32        1 /* first instruction of the 32-bit PVH entry */
#define MS_LONG_MODE      2 /* running 64-bit code on our page tables */
#define MS_MAIN           3 /* C main reached (BSP) */
#define MS_SCENARIO_START 4 /* command line parsed, scenario begins */
#define MS_SCENARIO_DONE  5 /* scenario finished, exit code follows */
#define MS_AP_ONLINE      6 /* an application processor reached C code */
#define MS_PANIC          7 /* unexpected exception/interrupt, exiting */

/*
 * isa-debug-exit at port 0xf4: a 32-bit write of v ends QEMU with status
 * (v << 1) | 1, so EXIT_OK shows as 1, EXIT_FAIL as 3, and so on.
 */
#define DEBUG_EXIT_PORT 0x00f4

#define EXIT_OK        0 /* scenario passed */
#define EXIT_FAIL      1 /* scenario ran and failed its checks */
#define EXIT_USAGE     2 /* bad command line, unknown test=, bad start_info */
#define EXIT_EXCEPTION 3 /* unexpected exception or interrupt */
#define EXIT_TIMEOUT   4 /* something we waited for never happened (an AP) */

#endif
