/* fuzz_ciphertext.c - the "vault:vN:" parser and the decrypt path on arbitrary input, for every
 * key type, derived or not: never a crash, and a failure never leaves plaintext behind. */
#include "crypto/keyring.h"

#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct kms_key_policy p;
    struct kms_key_version kv;
    struct kms_err err;
    uint32_t ver = 0;
    if (size < 1) {
        return 0;
    }
    enum kms_key_type type = (enum kms_key_type)(data[0] % 4);
    if (kms_key_policy_init(&p, type) != 0) {
        abort();
    }
    p.derived = (data[0] & 0x10) != 0;
    p.latest_version = 5;
    p.min_decryption_version = 2;
    memset(&kv, 0, sizeof(kv));
    memset(kv.key, 0x42, sizeof(kv.key));
    const char *ct = (const char *)data + 1;
    size_t len = size - 1;
    if (kms_keyring_ciphertext_version(&p, ct, len, &ver, &err) != 0) {
        return 0;
    }
    if (ver < 2 || ver > 5) {
        abort();
    }
    kv.version = ver;
    uint8_t *pt = NULL;
    size_t ptlen = 0;
    static const uint8_t ctx[] = "ctx";
    if (kms_keyring_decrypt(&p, &kv, ct, len, ctx, 3, p.derived, NULL, 0, &pt, &ptlen, &err) == 0) {
        kms_free_wipe((void **)&pt, ptlen);
    } else if (pt != NULL) {
        abort();
    }
    return 0;
}
