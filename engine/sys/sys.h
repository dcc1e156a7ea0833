/*
 * sys.h - the sys/ engine: health, seal status, init, mounts, namespaces, metrics and the
 * audit endpoints (sys/auth and sys/policy belong to engine/auth).
 */
#ifndef KMS_ENGINE_SYS_H
#define KMS_ENGINE_SYS_H

#include "api/engine.h"

/* Fill *out with the sys/ engine's descriptor (built in at "sys/", no state). */
void kms_sys_engine(struct kms_engine *out);
/*
 * Fill *out with the descriptor of sys/metrics alone (also at "sys/", no state; register it
 * beside kms_sys_engine). `unauthenticated` makes it answer without a token, as OpenBao's
 * listener option unauthenticated_metrics_access; it stays root-namespace only and unaudited.
 */
void kms_sys_metrics_engine(struct kms_engine *out, bool unauthenticated);

#endif
