/* fuzz_jsonbody.c - the request body reader (api/jsonbody.c) against json_loadb: yajl's
 * reading is jansson's tree or a hand-over, never a tree jansson would refuse or build
 * differently, and the composed reader answers exactly as jansson does. Inputs shorter than
 * the small-body cut are padded with spaces so the yajl path is the one exercised. */
#include "api/api.h"

#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    size_t n = size < 1100 ? 1100 : size;
    uint8_t *buf = malloc(n);
    if (buf == NULL) {
        abort();
    }
    memcpy(buf, data, size);
    memset(buf + size, ' ', n - size);
    json_error_t want_err, got_err;
    json_t *want =
        json_loadb((const char *)buf, n, JSON_DECODE_ANY | JSON_REJECT_DUPLICATES, &want_err);
    json_t *fast = kms_json_body_yajl(buf, n);
    if (fast != NULL && (want == NULL || !json_equal(want, fast))) {
        abort();
    }
    json_t *got = kms_json_body_load(buf, n, &got_err);
    if ((want == NULL) != (got == NULL) || (want != NULL && !json_equal(want, got)) ||
        (want == NULL && strcmp(want_err.text, got_err.text) != 0)) {
        abort();
    }
    json_decref(want);
    json_decref(fast);
    json_decref(got);
    free(buf);
    return 0;
}
