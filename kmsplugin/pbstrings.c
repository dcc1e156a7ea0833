/*
 * pbstrings.c - the string fields of a request as they are on the wire. protobuf-c decodes a
 * proto3 `string` into a NUL-terminated C string and keeps no length, so a uid "abc\0xyz"
 * would be read (compared, audited, logged) as "abc". The message is walked once more here,
 * with protobuf-c's own descriptors telling which field numbers are strings (and which are
 * nested messages, such as map entries, whose strings are walked too), and each string is
 * checked at its real length: no NUL byte, and well-formed UTF-8, as Go's protobuf (the
 * apiserver's) requires of a string field. api.proto stays the apiserver's definition.
 *
 * The walk reads the wire format as protobuf-c does (tags of at most 5 bytes, varints of at
 * most 10, no groups); it runs after protobuf-c has accepted the message.
 */
#include "kmsplugin/kmsplugin_int.h"
#include "crypto/crypto.h"

#include <protobuf-c/protobuf-c.h>
#include <stdio.h>
#include <string.h>

#define MAX_DEPTH 8 /* nested messages walked (the plugin's messages go two deep) */

/* A varint of at most `max` bytes at m[*at..len); -1 when it does not end in time. */
static int varint(const uint8_t *m, size_t len, size_t *at, unsigned max, uint64_t *v)
{
    *v = 0;
    for (unsigned i = 0; i < max && *at < len; i++) {
        uint8_t b = m[(*at)++];
        *v |= (uint64_t)(b & 0x7f) << (7 * i);
        if ((b & 0x80) == 0) {
            return 0;
        }
    }
    return -1;
}

static int walk(const ProtobufCMessageDescriptor *d, const uint8_t *m, size_t len,
                const char *outer, int depth, char *why, size_t n)
{
    size_t at = 0;
    while (at < len) {
        uint64_t tag = 0, flen = 0;
        if (varint(m, len, &at, 5, &tag) != 0) {
            return -1;
        }
        switch (tag & 7) {
        case PROTOBUF_C_WIRE_TYPE_VARINT:
            if (varint(m, len, &at, 10, &flen) != 0) {
                return -1;
            }
            continue;
        case PROTOBUF_C_WIRE_TYPE_64BIT:
            flen = 8;
            break;
        case PROTOBUF_C_WIRE_TYPE_32BIT:
            flen = 4;
            break;
        case PROTOBUF_C_WIRE_TYPE_LENGTH_PREFIXED:
            if (varint(m, len, &at, 10, &flen) != 0) {
                return -1;
            }
            break;
        default:
            return -1; /* groups: protobuf-c refuses them too */
        }
        if (flen > len - at) {
            return -1;
        }
        const ProtobufCFieldDescriptor *f =
            (tag >> 3) <= UINT32_MAX
                ? protobuf_c_message_descriptor_get_field(d, (unsigned)(tag >> 3))
                : NULL;
        if (f != NULL &&
            (f->type == PROTOBUF_C_TYPE_STRING || f->type == PROTOBUF_C_TYPE_MESSAGE)) {
            if ((tag & 7) != PROTOBUF_C_WIRE_TYPE_LENGTH_PREFIXED) {
                return -1; /* protobuf-c refuses these too */
            }
            const uint8_t *v = m + at;
            if (f->type == PROTOBUF_C_TYPE_STRING) {
                const char *bad = memchr(v, '\0', (size_t)flen) != NULL ? "contains a NUL byte"
                                  : !kms_utf8_valid((const char *)v, (size_t)flen) ? "is not UTF-8"
                                                                                   : NULL;
                if (bad != NULL) {
                    snprintf(why, n, "%s%s%s %s", outer, outer[0] ? " " : "", f->name, bad);
                    return 1;
                }
            } else if (depth < MAX_DEPTH) {
                int rc = walk(f->descriptor, v, (size_t)flen, f->name, depth + 1, why, n);
                if (rc != 0) {
                    return rc;
                }
            }
        }
        at += (size_t)flen;
    }
    return 0;
}

int kms_plugin_pb_strings(const struct ProtobufCMessageDescriptor *d, const uint8_t *msg,
                          size_t len, char *why, size_t n)
{
    why[0] = '\0';
    return walk(d, msg, len, "", 0, why, n);
}
