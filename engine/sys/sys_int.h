/* sys_int.h - private to engine/sys: the audit endpoints (sys_audit.c). */
#ifndef KMS_ENGINE_SYS_INT_H
#define KMS_ENGINE_SYS_INT_H

#include "engine/sys/sys.h"

int kms_sys_audit_hash(struct kms_ctx *c);
int kms_sys_audit_list(struct kms_ctx *c);
int kms_sys_audit_events(struct kms_ctx *c);
int kms_sys_audit_enable(struct kms_ctx *c);
int kms_sys_audit_disable(struct kms_ctx *c);
extern const struct kms_field kms_sys_audit_hash_fields[];
extern const struct kms_field kms_sys_audit_events_fields[];

#endif
