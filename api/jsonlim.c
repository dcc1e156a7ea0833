/*
 * jsonlim.c - a linear pre-scan of a JSON body that refuses documents too complex to parse
 * safely (OpenBao's max_request_json_strings, plus a nesting limit) before jansson builds a
 * tree. It does not validate JSON; the parser does that afterwards.
 */
#include "api/api_int.h"

int kms_json_precheck(const uint8_t *p, size_t n, const struct kms_api_limits *lim,
                      struct kms_err *err)
{
    size_t strings = 0;
    size_t depth = 0;
    bool in_str = false;
    bool esc = false;

    for (size_t i = 0; i < n; i++) {
        uint8_t ch = p[i];
        if (in_str) {
            if (esc) {
                esc = false;
            } else if (ch == '\\') {
                esc = true;
            } else if (ch == '"') {
                in_str = false;
            }
            continue;
        }
        switch (ch) {
        case '"':
            in_str = true;
            if (++strings > lim->max_json_strings) {
                return kms_err_set(err, 400,
                                   "refused JSON input due to high complexity: exceeded maximum "
                                   "number of strings");
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
