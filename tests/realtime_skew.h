/*
 * realtime_skew.h - a test binary's wall clock, stepped at will: included by one test file,
 * it defines clock_gettime for the whole binary (the modules under test are linked in
 * statically, so their calls come here), which reads CLOCK_REALTIME `realtime_skew` seconds
 * off the kernel's. To a deadline computed from the wall clock and waited for by the kernel,
 * that is what a system clock stepped by as much during the wait (NTP, a VM restored) is: a
 * skew ahead makes the wait that much longer, one behind ends it that much sooner.
 */
#ifndef KMS_TESTS_REALTIME_SKEW_H
#define KMS_TESTS_REALTIME_SKEW_H

#include <dlfcn.h>
#include <stdatomic.h>
#include <string.h>
#include <time.h>

static atomic_long realtime_skew;

int clock_gettime(clockid_t id, struct timespec *ts)
{
    static int (*real)(clockid_t, struct timespec *);
    if (real == NULL) {
        void *sym = dlsym(RTLD_NEXT, "clock_gettime");
        memcpy(&real, &sym, sizeof(real));
    }
    int rc = real(id, ts);
    if (rc == 0 && id == CLOCK_REALTIME) {
        ts->tv_sec += atomic_load(&realtime_skew);
    }
    return rc;
}

#endif
