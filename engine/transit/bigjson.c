/*
 * bigjson.c - Go's *big.Int in JSON text: Go marshals one as a bare integer of any length,
 * which jansson cannot hold (it stops at int64). Two text passes bridge the gap for
 * backup.c; both walk the text with the same tokenizer, so nothing inside a string (key
 * names, base64, escaped quotes and backslashes) is ever touched.
 *
 * Design notes:
 * - Reading: kms_json_quote_bigints copies the text with every integer of more than 18
 *   digits outside strings turned into a JSON string of the same characters; jansson then
 *   parses it and the reader takes such values as decimal strings (shorter ones stay
 *   integers, and the reader takes both).
 * - Writing: the document is built with each big integer as the string "<mark><digits>",
 *   the mark holding 128 random bits per backup, and kms_json_unquote_marked writes every
 *   string token that is exactly that as the bare digits. A key name cannot carry a mark it
 *   cannot know.
 * - Both passes keep the text's length bound (quoting adds two characters per integer of at
 *   least 19, so the copy is at most len + len/8 + 1) and wipe what they leave behind: the
 *   texts hold key material.
 */
#include "engine/transit/transit_int.h"

#include <stdlib.h>
#include <string.h>

/* Integers of this many digits or fewer always fit in an int64. */
#define INT64_SAFE_DIGITS 18

static bool is_digit(char ch)
{
    return ch >= '0' && ch <= '9';
}

/* Characters a JSON number token is made of. */
static bool is_number_char(char ch)
{
    return is_digit(ch) || ch == '-' || ch == '+' || ch == '.' || ch == 'e' || ch == 'E';
}

int kms_json_quote_bigints(const char *in, size_t len, char **out, size_t *outlen)
{
    size_t cap = len + len / 8 + 2, o = 0;
    char *q = malloc(cap);
    bool in_str = false;

    if (q == NULL) {
        return -1;
    }
    for (size_t i = 0; i < len; i++) {
        char ch = in[i];
        if (in_str) {
            q[o++] = ch;
            if (ch == '\\' && i + 1 < len) {
                q[o++] = in[++i]; /* the escaped character, whatever it is */
            } else if (ch == '"') {
                in_str = false;
            }
            continue;
        }
        if (ch == '"') {
            in_str = true;
            q[o++] = ch;
            continue;
        }
        if (!is_digit(ch) && ch != '-') {
            q[o++] = ch;
            continue;
        }
        size_t j = i;
        while (j < len && is_number_char(in[j])) {
            j++;
        }
        size_t k = ch == '-' ? i + 1 : i;
        size_t nd = 0;
        while (k + nd < j && is_digit(in[k + nd])) {
            nd++;
        }
        bool big = k + nd == j && nd > INT64_SAFE_DIGITS;
        if (big) {
            q[o++] = '"';
        }
        memcpy(q + o, in + i, j - i);
        o += j - i;
        if (big) {
            q[o++] = '"';
        }
        i = j - 1;
    }
    q[o] = '\0';
    *out = q;
    *outlen = o;
    return 0;
}

void kms_json_unquote_marked(char *s, const char *mark)
{
    size_t ml = strlen(mark);
    char *w = s;
    const char *r = s;
    bool in_str = false;

    while (*r != '\0') {
        if (in_str) {
            if (*r == '\\' && r[1] != '\0') {
                *w++ = *r++;
            } else if (*r == '"') {
                in_str = false;
            }
            *w++ = *r++;
            continue;
        }
        if (*r == '"') {
            const char *d = r + 1 + ml;
            const char *e = d;
            if (ml != 0 && strncmp(r + 1, mark, ml) == 0) {
                while (is_digit(*e)) {
                    e++;
                }
            }
            if (e > d && *e == '"') {
                while (d < e) {
                    *w++ = *d++;
                }
                r = e + 1;
                continue;
            }
            in_str = true;
        }
        *w++ = *r++;
    }
    /* the text only shrinks: wipe the tail it leaves behind */
    memset(w, 0, (size_t)(r - w) + 1);
}
