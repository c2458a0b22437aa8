/*
 * vmmcheck: the in-guest half of the Linux suite, one static binary.
 *
 *   vmmcheck rtc-periodic HZ COUNT   periodic interrupts of /dev/rtc0 at HZ
 *   vmmcheck rtc-alarm SECONDS       an alarm SECONDS ahead, and when it rang
 *   vmmcheck rtc-time                the RTC's time (UTC) as seconds since 1970
 *   vmmcheck hpet HZ COUNT           periodic interrupts of /dev/hpet at HZ
 *   vmmcheck cmos-get INDEX          a CMOS NVRAM byte (ports 0x70/0x71)
 *   vmmcheck cmos-set INDEX VALUE
 *   vmmcheck ticks IRQNAME SECONDS   how fast the /proc/interrupts line whose
 *                                    name column is IRQNAME rises (all CPUs)
 *   vmmcheck debug-exit VALUE        write VALUE to the debug-exit port 0xf4:
 *                                    the VMM exits with (VALUE << 1) | 1
 *
 * Every result is one line "VMMCHECK <what> key=value ..." on stdout, which
 * the host's tests parse; the exit status is 0 when the measurement could be
 * made (whether the figures are acceptable is the host's call).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/hpet.h>
#include <linux/rtc.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/io.h>
#include <sys/ioctl.h>
#include <time.h>
#include <unistd.h>

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int fail(const char *what, const char *why)
{
    printf("VMMCHECK %s error=\"%s: %s\"\n", what, why, strerror(errno));
    return 1;
}

static long arg(char **argv, int i, long lo, long hi)
{
    char *end;
    long v = strtol(argv[i], &end, 0);
    if (*end || v < lo || v > hi) {
        fprintf(stderr, "vmmcheck: '%s' is not a number in %ld..%ld\n", argv[i], lo, hi);
        exit(2);
    }
    return v;
}

/*
 * Counts COUNT interrupts read from fd and reports their rate over the time
 * between the first read and the last. Each read returns how many came
 * since the one before, in the bits above `shift` (the RTC keeps its flags
 * in the low byte).
 */
static int count_interrupts(const char *what, int fd, long hz, long count, int shift)
{
    double first = 0, last = 0;
    long seen = 0;
    while (seen < count) {
        unsigned long data;
        if (read(fd, &data, sizeof data) != (ssize_t)sizeof data)
            return fail(what, "read");
        last = now_s();
        if (seen == 0)
            first = last;
        seen += (long)(data >> shift);
    }
    double rate = last > first ? (double)(seen - 1) / (last - first) : 0;
    printf("VMMCHECK %s hz=%ld count=%ld measured_hz=%.2f seconds=%.3f\n", what, hz, seen, rate, last - first);
    return 0;
}

static int rtc_periodic(long hz, long count)
{
    int fd = open("/dev/rtc0", O_RDONLY);
    if (fd < 0)
        return fail("rtc-periodic", "open /dev/rtc0");
    if (ioctl(fd, RTC_IRQP_SET, (unsigned long)hz) < 0)
        return fail("rtc-periodic", "RTC_IRQP_SET");
    if (ioctl(fd, RTC_PIE_ON, 0) < 0)
        return fail("rtc-periodic", "RTC_PIE_ON");
    int r = count_interrupts("rtc-periodic", fd, hz, count, 8);
    ioctl(fd, RTC_PIE_OFF, 0);
    close(fd);
    return r;
}

static int rtc_alarm(long seconds)
{
    int fd = open("/dev/rtc0", O_RDONLY);
    if (fd < 0)
        return fail("rtc-alarm", "open /dev/rtc0");
    struct rtc_time tm;
    if (ioctl(fd, RTC_RD_TIME, &tm) < 0)
        return fail("rtc-alarm", "RTC_RD_TIME");
    struct tm t = {.tm_sec = tm.tm_sec, .tm_min = tm.tm_min, .tm_hour = tm.tm_hour, .tm_mday = tm.tm_mday,
                   .tm_mon = tm.tm_mon, .tm_year = tm.tm_year};
    time_t when = timegm(&t) + seconds;
    struct tm a;
    gmtime_r(&when, &a);
    struct rtc_wkalrm alarm = {.enabled = 1,
                               .time = {.tm_sec = a.tm_sec, .tm_min = a.tm_min, .tm_hour = a.tm_hour,
                                        .tm_mday = a.tm_mday, .tm_mon = a.tm_mon, .tm_year = a.tm_year}};
    if (ioctl(fd, RTC_WKALM_SET, &alarm) < 0)
        return fail("rtc-alarm", "RTC_WKALM_SET");
    double start = now_s();
    unsigned long data;
    if (read(fd, &data, sizeof data) != (ssize_t)sizeof data)
        return fail("rtc-alarm", "read");
    double took = now_s() - start;
    ioctl(fd, RTC_AIE_OFF, 0);
    printf("VMMCHECK rtc-alarm seconds=%ld rang_after=%.3f alarm_irq=%d\n", seconds, took,
           (data & RTC_AF) != 0);
    close(fd);
    return 0;
}

static int rtc_time(void)
{
    int fd = open("/dev/rtc0", O_RDONLY);
    if (fd < 0)
        return fail("rtc-time", "open /dev/rtc0");
    struct rtc_time tm;
    if (ioctl(fd, RTC_RD_TIME, &tm) < 0)
        return fail("rtc-time", "RTC_RD_TIME");
    close(fd);
    struct tm t = {.tm_sec = tm.tm_sec, .tm_min = tm.tm_min, .tm_hour = tm.tm_hour, .tm_mday = tm.tm_mday,
                   .tm_mon = tm.tm_mon, .tm_year = tm.tm_year};
    printf("VMMCHECK rtc-time epoch=%lld\n", (long long)timegm(&t));
    return 0;
}

static int hpet(long hz, long count)
{
    int fd = open("/dev/hpet", O_RDONLY);
    if (fd < 0)
        return fail("hpet", "open /dev/hpet");
    if (ioctl(fd, HPET_IRQFREQ, (unsigned long)hz) < 0)
        return fail("hpet", "HPET_IRQFREQ");
    if (ioctl(fd, HPET_IE_ON, 0) < 0)
        return fail("hpet", "HPET_IE_ON");
    int r = count_interrupts("hpet", fd, hz, count, 0);
    ioctl(fd, HPET_IE_OFF, 0);
    close(fd);
    return r;
}

static int cmos(int set, long index, long value)
{
    if (ioperm(0x70, 2, 1) < 0)
        return fail("cmos", "ioperm");
    /* Bit 7 of the index port is the NMI mask: keep NMIs enabled. */
    outb((unsigned char)(index & 0x7f), 0x70);
    if (set)
        outb((unsigned char)value, 0x71);
    else
        printf("VMMCHECK cmos index=%ld value=%d\n", index, inb(0x71));
    return 0;
}

/* The sum over CPUs of the /proc/interrupts line whose last column is name. */
static long long irq_count(const char *name)
{
    FILE *f = fopen("/proc/interrupts", "r");
    if (!f)
        return -1;
    char line[4096];
    long long total = -1;
    while (fgets(line, sizeof line, f)) {
        char *colon = strchr(line, ':');
        if (!colon)
            continue;
        size_t n = strlen(line);
        while (n && (line[n - 1] == '\n' || line[n - 1] == ' '))
            line[--n] = 0;
        const char *last = strrchr(line, ' ');
        if (!last || strcmp(last + 1, name) != 0)
            continue;
        long long sum = 0;
        char *p = colon + 1;
        for (;;) {
            char *end;
            long long v = strtoll(p, &end, 10);
            if (end == p)
                break;
            sum += v;
            p = end;
        }
        total = sum;
        break;
    }
    fclose(f);
    return total;
}

static int ticks(const char *name, long seconds)
{
    long long a = irq_count(name);
    if (a < 0) {
        printf("VMMCHECK ticks irq=%s error=\"no such line in /proc/interrupts\"\n", name);
        return 1;
    }
    double t0 = now_s();
    sleep((unsigned)seconds);
    long long b = irq_count(name);
    double t1 = now_s();
    printf("VMMCHECK ticks irq=%s count=%lld seconds=%.3f measured_hz=%.2f\n", name, b - a, t1 - t0,
           (double)(b - a) / (t1 - t0));
    return 0;
}

static int debug_exit(long value)
{
    if (ioperm(0xf4, 1, 1) < 0)
        return fail("debug-exit", "ioperm");
    outb((unsigned char)value, 0xf4);
    return 0;
}

int main(int argc, char **argv)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (argc == 4 && !strcmp(argv[1], "rtc-periodic"))
        return rtc_periodic(arg(argv, 2, 2, 8192), arg(argv, 3, 2, 100000));
    if (argc == 2 && !strcmp(argv[1], "rtc-time"))
        return rtc_time();
    if (argc == 3 && !strcmp(argv[1], "rtc-alarm"))
        return rtc_alarm(arg(argv, 2, 1, 3600));
    if (argc == 4 && !strcmp(argv[1], "hpet"))
        return hpet(arg(argv, 2, 1, 8192), arg(argv, 3, 2, 100000));
    if (argc == 3 && !strcmp(argv[1], "cmos-get"))
        return cmos(0, arg(argv, 2, 14, 127), 0);
    if (argc == 4 && !strcmp(argv[1], "cmos-set"))
        return cmos(1, arg(argv, 2, 14, 127), arg(argv, 3, 0, 255));
    if (argc == 4 && !strcmp(argv[1], "ticks"))
        return ticks(argv[2], arg(argv, 3, 1, 600));
    if (argc == 3 && !strcmp(argv[1], "debug-exit"))
        return debug_exit(arg(argv, 2, 0, 255));
    fprintf(stderr, "usage: vmmcheck rtc-periodic HZ COUNT | rtc-alarm SECONDS | rtc-time | hpet HZ COUNT |\n"
                    "                cmos-get INDEX | cmos-set INDEX VALUE | ticks IRQNAME SECONDS |\n"
                    "                debug-exit VALUE\n");
    return 2;
}
