/*
 * sys.h - the sys/ engine: health, seal status, init, mounts, namespaces, metrics and the
 * audit endpoints (sys/auth and sys/policy belong to engine/auth).
 */
#ifndef KMS_ENGINE_SYS_H
#define KMS_ENGINE_SYS_H

#include "api/engine.h"

/* Fill *out with the sys/ engine's descriptor (built in at "sys/", no state). */
void kms_sys_engine(struct kms_engine *out);

#endif
