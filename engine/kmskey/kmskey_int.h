/*
 * kmskey_int.h - private to engine/kmskey: the ownership index (owners.c), which KMSKey owns
 * which Transit name in each organization namespace.
 */
#ifndef KMS_ENGINE_KMSKEY_INT_H
#define KMS_ENGINE_KMSKEY_INT_H

#include <stdbool.h>
#include <stddef.h>

#include "engine/kmskey/kmskey.h"

#define KMS_KMSKEY_LABEL_MAX 63

/*
 * The ownership index. A Transit name is kept as its "rest", the name without the leading
 * "<org>-" (so "b-c-d" for "org-b-c-d"): the organization follows from the namespace.
 *
 * Every KMSKey record and every tombstone is an entry: a KMSKey deleted with deletionPolicy
 * retain leaves one, so its Transit key stays its project's; a key a project-bound token made
 * with Transit calls, under a name that also reads as another project's, gets one too. Two
 * entries may claim one rest only in stores written before ownership was checked; the owner
 * is then the entry created first (creationTimestamp, then load order) and the others own
 * nothing. Thread-safe (a rwlock): Transit asks it on every request of a project-bound token.
 */
struct kms_owners;

struct kms_owner {
    char project[KMS_KMSKEY_LABEL_MAX + 1];
    char name[KMS_KMSKEY_LABEL_MAX + 1];
    bool retained; /* a tombstone: the KMSKey is gone, its Transit key stays its project's */
    bool made;     /* (a tombstone) no KMSKey yet: a token of the project made the key */
};

int kms_owners_create(struct kms_owners **out) KMS_WUR;
void kms_owners_destroy(struct kms_owners **o);
/* Make room for one more entry, so that the next kms_owners_add cannot fail. */
int kms_owners_reserve(struct kms_owners *o) KMS_WUR;
/*
 * Add the entry of KMSKey (project, name) of namespace ns_id, created at `created` (RFC 3339,
 * "" = now, i.e. after every existing entry); `made` marks a tombstone written for a key a
 * project's token made with Transit calls. An entry of the same (project, name, retained)
 * already there is kept. -1 only when out of memory (never after kms_owners_reserve).
 */
int kms_owners_add(struct kms_owners *o, const char *ns_id, const char *project, const char *name,
                   const char *created, bool retained, bool made);
void kms_owners_remove(struct kms_owners *o, const char *ns_id, const char *project,
                       const char *name, bool retained);
/* Forget every entry of a namespace (after its purge committed). */
void kms_owners_purge_ns(struct kms_owners *o, const char *ns_id);
/* The owner of Transit name `rest` in ns_id: 1 (copied to *out) or 0 when nobody owns it. */
int kms_owners_lookup(struct kms_owners *o, const char *ns_id, const char *rest,
                      struct kms_owner *out);
/*
 * Whether `rest` also reads as "<p'>-<n'>" for a project p' other than `except` that has an
 * entry in ns_id: 1 with p' copied to out (KMS_KMSKEY_LABEL_MAX + 1 bytes), else 0.
 */
int kms_owners_other_project(struct kms_owners *o, const char *ns_id, const char *rest,
                             const char *except, char *out);

#endif
