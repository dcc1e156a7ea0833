/* fuzz_b64.c - Go-compatible base64: decode never overflows; what decodes re-encodes to a
 * string that decodes to the same bytes. */
#include "crypto/crypto.h"

#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    uint8_t *out = NULL, *again = NULL;
    size_t n = 0, m = 0, at = 0;
    if (kms_b64_decode_alloc((const char *)data, size, &out, &n, &at) == 0) {
        char *enc = malloc(kms_b64_encoded_len(n) + 1);
        if (enc == NULL) {
            abort();
        }
        kms_b64_encode(out, n, enc);
        if (kms_b64_decode_alloc(enc, strlen(enc), &again, &m, &at) != 0 || m != n ||
            memcmp(out, again, n) != 0) {
            abort();
        }
        free(enc);
        free(again);
        free(out);
    } else if (at > size) {
        abort();
    }
    return 0;
}
