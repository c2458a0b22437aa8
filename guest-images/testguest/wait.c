#include "wait.h"

#include "apic.h"
#include "io.h"
#include "irq.h"
#include "tsc.h"

static bool use_deadline;
static bool ready;
/* Armed once per wait, not once per wake-up: other interrupts wake us far more often. */
static volatile bool watchdog_armed;

static void watchdog_irq(unsigned vector, uint64_t tsc)
{
    (void)vector;
    (void)tsc;
    watchdog_armed = false;
    lapic_eoi();
}

bool wait_init(void)
{
    if (ready)
        return true;
    if (!tsc_hz())
        return false;
    irq_set_handler(VEC_WATCHDOG, watchdog_irq);
    use_deadline = lapic_has_tsc_deadline();
    ready = use_deadline || lapic_timer_calibrate();
    return ready;
}

static void arm_watchdog(uint64_t deadline)
{
    if (use_deadline) {
        lapic_timer_tsc_deadline_mode(VEC_WATCHDOG);
        lapic_timer_set_deadline(deadline);
        return;
    }
    uint64_t now = rdtsc();
    uint64_t ticks = deadline > now ? tsc_to_lapic_ticks(deadline - now) + 1 : 1;
    /* Longer than the counter reaches: wake early, the loop re-arms. */
    lapic_timer_oneshot(VEC_WATCHDOG, ticks > 0xffffffffu ? 0xffffffffu : (uint32_t)ticks);
}

bool wait_until(wait_cond_fn cond, void *arg, uint64_t deadline, enum wake how)
{
    bool met = false;
    uint64_t flags = read_rflags();
    cli();
    for (;;) {
        if (cond && cond(arg)) {
            met = true;
            break;
        }
        if (rdtsc() >= deadline)
            break;
        if (how == WAKE_WATCHDOG) {
            if (!ready) { /* no way to be woken: the only honest wait left is a spin */
                sti();
                cpu_relax();
                cli();
                continue;
            }
            if (!watchdog_armed) {
                watchdog_armed = true;
                arm_watchdog(deadline);
            }
        }
        sti_hlt_cli();
    }
    if (how == WAKE_WATCHDOG && ready) {
        lapic_timer_stop();
        watchdog_armed = false;
    }
    if (flags & 0x200)
        sti();
    return met;
}

void delay_us(uint64_t us)
{
    uint64_t end = rdtsc() + us_to_tsc(us);
    if (us > 1000) {
        wait_until(0, 0, end, WAKE_WATCHDOG);
        return;
    }
    while (rdtsc() < end)
        cpu_relax();
}
