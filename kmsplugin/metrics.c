/*
 * metrics.c - plugin call counters (by method and gRPC code) and latency histograms (by
 * method), process-wide and lock-free (relaxed atomic adds), rendered as Prometheus text.
 */
#include "kmsplugin/kmsplugin_int.h"

#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NCODES 17
#define NBUCKETS 12

static const uint64_t bounds_us[NBUCKETS] = {50,   100,   250,   500,    1000,    2500,
                                             5000, 10000, 25000, 100000, 1000000, UINT64_MAX};

static _Atomic uint64_t calls[KMS_PLUGIN_NMETHODS][NCODES];
static _Atomic uint64_t buckets[KMS_PLUGIN_NMETHODS][NBUCKETS];
static _Atomic uint64_t sum_us[KMS_PLUGIN_NMETHODS];
static _Atomic int64_t queued;

static const char *const code_names[NCODES] = {
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
};

/* Count a call of method m under its gRPC code; false for an unknown method. */
static bool count_code(enum kms_plugin_method m, int code)
{
    if ((unsigned)m >= KMS_PLUGIN_NMETHODS) {
        return false;
    }
    size_t c = code >= 0 && code < NCODES ? (size_t)code : (size_t)KMS_GRPC_UNKNOWN;
    atomic_fetch_add_explicit(&calls[m][c], 1, memory_order_relaxed);
    return true;
}

void kms_plugin_metrics_count(enum kms_plugin_method m, int code, int64_t micros)
{
    if (!count_code(m, code)) {
        return;
    }
    uint64_t us = micros > 0 ? (uint64_t)micros : 0;
    for (size_t b = 0; b < NBUCKETS; b++) {
        if (us <= bounds_us[b]) {
            atomic_fetch_add_explicit(&buckets[m][b], 1, memory_order_relaxed);
            break;
        }
    }
    atomic_fetch_add_explicit(&sum_us[m], us, memory_order_relaxed);
}

void kms_plugin_metrics_refused(enum kms_plugin_method m, int code)
{
    (void)count_code(m, code);
}

void kms_plugin_metrics_queued(int delta)
{
    atomic_fetch_add_explicit(&queued, delta, memory_order_relaxed);
}

struct out {
    char **buf;
    size_t *len, *cap;
    bool oom;
};

static void outf(struct out *o, const char *fmt, ...) KMS_PRINTF(2, 3);

static void outf(struct out *o, const char *fmt, ...)
{
    for (int attempt = 0; attempt < 2 && !o->oom; attempt++) {
        va_list ap;
        va_start(ap, fmt);
        size_t room = *o->cap - *o->len;
        int n = vsnprintf(*o->buf ? *o->buf + *o->len : NULL, *o->buf ? room : 0, fmt, ap);
        va_end(ap);
        if (n < 0) {
            o->oom = true;
            return;
        }
        if (*o->buf != NULL && (size_t)n < room) {
            *o->len += (size_t)n;
            return;
        }
        size_t ncap = (*o->cap ? *o->cap : 4096) * 2 + (size_t)n;
        char *g = realloc(*o->buf, ncap);
        if (g == NULL) {
            o->oom = true;
            return;
        }
        *o->buf = g;
        *o->cap = ncap;
    }
}

int kms_plugin_metrics_text(char **buf, size_t *len, size_t *cap)
{
    struct out o = {buf, len, cap, false};
    outf(&o, "# HELP kmsd_kms_plugin_calls_total KMS plugin gRPC calls, by method and code.\n"
             "# TYPE kmsd_kms_plugin_calls_total counter\n");
    for (size_t m = 0; m < KMS_PLUGIN_NMETHODS; m++) {
        for (size_t c = 0; c < NCODES; c++) {
            uint64_t v = atomic_load_explicit(&calls[m][c], memory_order_relaxed);
            if (v != 0 || c == KMS_GRPC_OK) {
                outf(&o, "kmsd_kms_plugin_calls_total{method=\"%s\",code=\"%s\"} %llu\n",
                     kms_plugin_method_name((enum kms_plugin_method)m), code_names[c],
                     (unsigned long long)v);
            }
        }
    }
    outf(&o, "# HELP kmsd_kms_plugin_call_duration_seconds Time to run a KMS plugin call.\n"
             "# TYPE kmsd_kms_plugin_call_duration_seconds histogram\n");
    for (size_t m = 0; m < KMS_PLUGIN_NMETHODS; m++) {
        const char *name = kms_plugin_method_name((enum kms_plugin_method)m);
        uint64_t cum = 0;
        for (size_t b = 0; b < NBUCKETS; b++) {
            cum += atomic_load_explicit(&buckets[m][b], memory_order_relaxed);
            if (bounds_us[b] == UINT64_MAX) {
                outf(&o,
                     "kmsd_kms_plugin_call_duration_seconds_bucket{method=\"%s\",le=\"+Inf\"} "
                     "%llu\n",
                     name, (unsigned long long)cum);
            } else {
                outf(&o,
                     "kmsd_kms_plugin_call_duration_seconds_bucket{method=\"%s\",le=\"%g\"} "
                     "%llu\n",
                     name, (double)bounds_us[b] / 1e6, (unsigned long long)cum);
            }
        }
        outf(&o, "kmsd_kms_plugin_call_duration_seconds_sum{method=\"%s\"} %.6f\n", name,
             (double)atomic_load(&sum_us[m]) / 1e6);
        outf(&o, "kmsd_kms_plugin_call_duration_seconds_count{method=\"%s\"} %llu\n", name,
             (unsigned long long)cum);
    }
    outf(&o,
         "# HELP kmsd_kms_plugin_calls_queued KMS plugin calls received and waiting for a "
         "call thread.\n"
         "# TYPE kmsd_kms_plugin_calls_queued gauge\n"
         "kmsd_kms_plugin_calls_queued %lld\n",
         (long long)atomic_load_explicit(&queued, memory_order_relaxed));
    return o.oom ? -1 : 0;
}
