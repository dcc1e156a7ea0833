/*
 * pq_dl.h - libpq reached through dlopen (storage/pq_dl.c), private to storage/: kmsd maps
 * libpq and the libraries it pulls in (Kerberos, LDAP, GnuTLS: ~3.3 MiB of resident pages)
 * only when a store is on PostgreSQL, not in every process. postgresql.c includes this after
 * <libpq-fe.h> and calls the PQ* names as usual; each is a pointer filled by kms_pq_load.
 */
#ifndef KMS_STORAGE_PQ_DL_H
#define KMS_STORAGE_PQ_DL_H

#include "storage/storage.h"

#include <libpq-fe.h>

#define KMS_PQ_FUNCS(X)                                                                            \
    X(PQclear)                                                                                     \
    X(PQcmdStatus)                                                                                 \
    X(PQcmdTuples)                                                                                 \
    X(PQconnectdbParams)                                                                           \
    X(PQconninfoFree)                                                                              \
    X(PQconninfoParse)                                                                             \
    X(PQconsumeInput)                                                                              \
    X(PQerrorMessage)                                                                              \
    X(PQexec)                                                                                      \
    X(PQexecParams)                                                                                \
    X(PQexecPrepared)                                                                              \
    X(PQfinish)                                                                                    \
    X(PQflush)                                                                                     \
    X(PQfreemem)                                                                                   \
    X(PQgetResult)                                                                                 \
    X(PQgetlength)                                                                                 \
    X(PQgetvalue)                                                                                  \
    X(PQisBusy)                                                                                    \
    X(PQisthreadsafe)                                                                              \
    X(PQntuples)                                                                                   \
    X(PQresultStatus)                                                                              \
    X(PQsendQuery)                                                                                 \
    X(PQsendQueryParams)                                                                           \
    X(PQsendQueryPrepared)                                                                         \
    X(PQsetNoticeProcessor)                                                                        \
    X(PQsocket)                                                                                    \
    X(PQstatus)                                                                                    \
    X(PQtransactionStatus)

#define KMS_PQ_FIELD(f) __typeof__(&f) f;
struct kms_pq {
    KMS_PQ_FUNCS(KMS_PQ_FIELD)
};
#undef KMS_PQ_FIELD

/* The loaded functions; valid once kms_pq_load returned 0. */
extern struct kms_pq kms_pq;

/*
 * Load libpq.so.5 and every function above, once per process (later calls return the first
 * answer). -1 with err set (500, naming the library and dlerror's reason) when it cannot.
 * Thread-safe.
 */
int kms_pq_load(struct kms_err *err) KMS_WUR;

#ifndef KMS_PQ_DL_IMPL
#define PQclear kms_pq.PQclear
#define PQcmdStatus kms_pq.PQcmdStatus
#define PQcmdTuples kms_pq.PQcmdTuples
#define PQconnectdbParams kms_pq.PQconnectdbParams
#define PQconninfoFree kms_pq.PQconninfoFree
#define PQconninfoParse kms_pq.PQconninfoParse
#define PQconsumeInput kms_pq.PQconsumeInput
#define PQerrorMessage kms_pq.PQerrorMessage
#define PQexec kms_pq.PQexec
#define PQexecParams kms_pq.PQexecParams
#define PQexecPrepared kms_pq.PQexecPrepared
#define PQfinish kms_pq.PQfinish
#define PQflush kms_pq.PQflush
#define PQfreemem kms_pq.PQfreemem
#define PQgetResult kms_pq.PQgetResult
#define PQgetlength kms_pq.PQgetlength
#define PQgetvalue kms_pq.PQgetvalue
#define PQisBusy kms_pq.PQisBusy
#define PQisthreadsafe kms_pq.PQisthreadsafe
#define PQntuples kms_pq.PQntuples
#define PQresultStatus kms_pq.PQresultStatus
#define PQsendQuery kms_pq.PQsendQuery
#define PQsendQueryParams kms_pq.PQsendQueryParams
#define PQsendQueryPrepared kms_pq.PQsendQueryPrepared
#define PQsetNoticeProcessor kms_pq.PQsetNoticeProcessor
#define PQsocket kms_pq.PQsocket
#define PQstatus kms_pq.PQstatus
#define PQtransactionStatus kms_pq.PQtransactionStatus
#endif

#endif
