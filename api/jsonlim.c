/*
 * jsonlim.c - a linear pre-scan of a JSON body that refuses documents too complex to parse
 * safely (OpenBao's max_request_json_strings, plus a nesting limit) before jansson builds a
 * tree. It does not validate JSON; the parser does that afterwards.
 */
#include "api/api_int.h"

#include <string.h>

size_t kms_json_string_end(const uint8_t *p, size_t n, size_t open)
{
    /* the closing quote: the next '"' not escaped by an odd run of '\\' */
    for (size_t from = open + 1;;) {
        const uint8_t *q = memchr(p + from, '"', n - from);
        if (q == NULL) {
            return n;
        }
        size_t j = (size_t)(q - p), k = j;
        while (k > from && p[k - 1] == '\\') {
            k--;
        }
        if ((j - k) % 2 == 0) {
            return j;
        }
        from = j + 1;
    }
}

int kms_json_precheck(const uint8_t *p, size_t n, const struct kms_api_limits *lim,
                      struct kms_err *err)
{
    size_t strings = 0;
    size_t depth = 0;

    for (size_t i = 0; i < n; i++) {
        switch (p[i]) {
        case '"':
            if (++strings > lim->max_json_strings) {
                return kms_err_set(err, 400,
                                   "refused JSON input due to high complexity: exceeded maximum "
                                   "number of strings");
            }
            i = kms_json_string_end(p, n, i);
            if (i == n) {
                return 0; /* unterminated: the parser reports it */
            }
            break;
        case '{':
        case '[':
            if (++depth > lim->max_json_depth) {
                return kms_err_set(err, 400,
                                   "refused JSON input due to high complexity: exceeded maximum "
                                   "nesting depth");
            }
            break;
        case '}':
        case ']':
            if (depth > 0) {
                depth--;
            }
            break;
        default:
            break;
        }
    }
    return 0;
}
