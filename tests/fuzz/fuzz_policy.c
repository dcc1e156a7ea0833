/* fuzz_policy.c - the ACL policy parser (HCL subset and JSON) and ACL compilation on arbitrary
 * text: errors, never crashes; what parses compiles and answers queries. */
#include "auth/auth.h"

#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct kms_policy *p = NULL;
    struct kms_acl *acl = NULL;
    struct kms_err err;
    if (kms_policy_parse((const char *)data, size, "org1/", &p, &err) != 0) {
        if (p != NULL) {
            abort();
        }
        return 0;
    }
    const struct kms_policy *pols[1] = {p};
    const char *names[1] = {"fuzz"};
    if (kms_acl_create(pols, names, 1, "org1/", false, &acl) == 0) {
        kms_acl_destroy(&acl);
    }
    kms_policy_free(&p);
    return 0;
}
