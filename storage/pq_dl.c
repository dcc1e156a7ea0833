/*
 * pq_dl.c - loads libpq on first use (see pq_dl.h for why): dlopen of the soname the
 * libpq-dev headers belong to, then dlsym of each function postgresql.c calls.
 */
#define KMS_PQ_DL_IMPL
#include "storage/pq_dl.h"

#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>

#define KMS_PQ_SONAME "libpq.so.5"

struct kms_pq kms_pq;

static pthread_once_t load_once = PTHREAD_ONCE_INIT;
static char load_error[200]; /* empty once loaded */

static void load(void)
{
    void *h = dlopen(KMS_PQ_SONAME, RTLD_NOW | RTLD_LOCAL);
    const char *missing = NULL;
    if (h == NULL) {
        const char *why = dlerror();
        snprintf(load_error, sizeof(load_error), "cannot load %s: %s", KMS_PQ_SONAME,
                 why != NULL ? why : "unknown error");
        return;
    }
#define KMS_PQ_SYM(f)                                                                              \
    if (missing == NULL && (*(void **)&kms_pq.f = dlsym(h, #f)) == NULL) {                         \
        missing = #f;                                                                              \
    }
    KMS_PQ_FUNCS(KMS_PQ_SYM)
#undef KMS_PQ_SYM
    if (missing != NULL) {
        snprintf(load_error, sizeof(load_error), "cannot load %s: no %s", KMS_PQ_SONAME, missing);
    }
}

int kms_pq_load(struct kms_err *err)
{
    pthread_once(&load_once, load);
    if (load_error[0] != '\0') {
        return kms_err_set(err, 500, "%s", load_error);
    }
    return 0;
}
