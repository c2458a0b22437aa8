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
 *   vmmcheck disk DEVICE read|write|randread BLOCK DEPTH SECONDS
 *                                    O_DIRECT I/O of BLOCK bytes with DEPTH
 *                                    requests in flight (Linux native AIO)
 *                                    for SECONDS; writes end with fdatasync.
 *                                    Prints "VMMCHECK disk-begin", waits
 *                                    BEGIN_PAUSE_US so a host reading its
 *                                    VM-exit counters on that line reads
 *                                    them before the first request, then the
 *                                    result line
 *
 * Every result is one line "VMMCHECK <what> key=value ..." on stdout, which
 * the host's tests parse; the exit status is 0 when the measurement could be
 * made (whether the figures are acceptable is the host's call).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/aio_abi.h>
#include <linux/fs.h>
#include <linux/hpet.h>
#include <linux/rtc.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/io.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>
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

/*
 * The sum over CPUs of the /proc/interrupts line named `name`: by its label
 * ("LOC", "NMI", or a number) or by its last column, the handler's name
 * ("timer", "rtc0").
 */
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
        const char *label = line;
        while (*label == ' ')
            label++;
        const size_t label_len = (size_t)(colon - label);
        const char *last = strrchr(colon, ' ');
        const int by_label = strlen(name) == label_len && !strncmp(label, name, label_len);
        const int by_handler = last && !strcmp(last + 1, name);
        if (!by_label && !by_handler)
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

/* Long enough for the host to see the line and read its counters. */
#define BEGIN_PAUSE_US 300000

struct disk_run {
    int fd, writing, random;
    long block;
    uint64_t blocks;
    unsigned char *buffers;
    struct iocb *iocbs;
    aio_context_t ctx;
    uint64_t next, state;
    long in_flight;
};

/* Submits request slot i: the next block in order, or a random one. */
static int disk_submit(struct disk_run *run, long i)
{
    uint64_t index;
    if (run->random) {
        run->state ^= run->state << 13, run->state ^= run->state >> 7, run->state ^= run->state << 17;
        index = run->state % run->blocks;
    } else {
        index = run->next++ % run->blocks;
    }
    struct iocb *cb = &run->iocbs[i];
    memset(cb, 0, sizeof *cb);
    cb->aio_data = (uint64_t)i;
    cb->aio_lio_opcode = run->writing ? IOCB_CMD_PWRITE : IOCB_CMD_PREAD;
    cb->aio_fildes = (uint32_t)run->fd;
    cb->aio_buf = (uint64_t)(uintptr_t)(run->buffers + i * run->block);
    cb->aio_nbytes = (uint64_t)run->block;
    cb->aio_offset = (int64_t)(index * (uint64_t)run->block);
    struct iocb *list[1] = {cb};
    if (syscall(SYS_io_submit, run->ctx, 1, list) != 1)
        return -1;
    ++run->in_flight;
    return 0;
}

static int disk(const char *device, const char *pattern, long block, long depth, long seconds)
{
    const int writing = !strcmp(pattern, "write"), random = !strcmp(pattern, "randread");
    if (!writing && !random && strcmp(pattern, "read")) {
        fprintf(stderr, "vmmcheck: disk pattern is read, write or randread, not '%s'\n", pattern);
        return 2;
    }
    if (block % 4096) {
        fprintf(stderr, "vmmcheck: disk block must be a multiple of 4096 (O_DIRECT)\n");
        return 2;
    }
    const int fd = open(device, (writing ? O_RDWR : O_RDONLY) | O_DIRECT);
    if (fd < 0)
        return fail("disk", device);
    uint64_t size = 0;
    if (ioctl(fd, BLKGETSIZE64, &size) < 0)
        return fail("disk", "BLKGETSIZE64");
    const uint64_t blocks = size / (uint64_t)block;
    if (blocks < (uint64_t)depth) {
        errno = ENOSPC;
        return fail("disk", "device smaller than BLOCK * DEPTH");
    }
    unsigned char *buffers = aligned_alloc(4096, (size_t)(block * depth));
    struct iocb *iocbs = calloc((size_t)depth, sizeof *iocbs);
    struct io_event *events = calloc((size_t)depth, sizeof *events);
    aio_context_t ctx = 0;
    if (!buffers || !iocbs || !events)
        return fail("disk", "out of memory");
    memset(buffers, 0x5a, (size_t)(block * depth));
    if (syscall(SYS_io_setup, depth, &ctx) < 0)
        return fail("disk", "io_setup");

    struct disk_run run = {fd, writing, random, block, blocks, buffers, iocbs, ctx, 0, 0x9E3779B97F4A7C15ull, 0};
    uint64_t ops = 0;
    printf("VMMCHECK disk-begin pattern=%s block=%ld depth=%ld\n", pattern, block, depth);
    usleep(BEGIN_PAUSE_US);
    const double start = now_s(), stop = start + (double)seconds;
    for (long i = 0; i < depth; ++i)
        if (disk_submit(&run, i) < 0)
            return fail("disk", "io_submit");
    int failed = 0;
    while (run.in_flight > 0) {
        const long n = syscall(SYS_io_getevents, ctx, 1, depth, events, NULL);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return fail("disk", "io_getevents");
        }
        run.in_flight -= n;
        const int more = now_s() < stop;
        for (long e = 0; e < n; ++e) {
            if (events[e].res != block)
                failed = 1;
            ++ops;
            if (more && !failed && disk_submit(&run, (long)events[e].data) < 0)
                return fail("disk", "io_submit");
        }
    }
    if (writing && fdatasync(fd) < 0)
        return fail("disk", "fdatasync");
    const double elapsed = now_s() - start;
    syscall(SYS_io_destroy, ctx);
    close(fd);
    free(events);
    free(iocbs);
    free(buffers);
    if (failed) {
        errno = EIO;
        return fail("disk", "a request completed short or with an error");
    }
    printf("VMMCHECK disk pattern=%s block=%ld depth=%ld ops=%llu bytes=%llu seconds=%.3f\n", pattern, block,
           depth, (unsigned long long)ops, (unsigned long long)(ops * (uint64_t)block), elapsed);
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
    if (argc == 7 && !strcmp(argv[1], "disk"))
        return disk(argv[2], argv[3], arg(argv, 4, 4096, 16 << 20), arg(argv, 5, 1, 256), arg(argv, 6, 1, 600));
    fprintf(stderr, "usage: vmmcheck rtc-periodic HZ COUNT | rtc-alarm SECONDS | rtc-time | hpet HZ COUNT |\n"
                    "                cmos-get INDEX | cmos-set INDEX VALUE | ticks IRQNAME SECONDS |\n"
                    "                debug-exit VALUE | disk DEVICE read|write|randread BLOCK DEPTH SECONDS\n");
    return 2;
}
