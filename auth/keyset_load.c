/*
 * keyset_load.c - the verification key set a login method's config names: PEM keys, an
 * inline JWKS document, or a JWKS file re-read at every login (so a rotated file is picked
 * up).
 *
 * The file is read defensively: it is opened without blocking (a FIFO or a device cannot hang
 * the worker), only a regular file of at most 1 MiB is read, and every failure gives the same
 * message, so the API cannot be used to learn whether a host path exists.
 */
#include "auth/auth.h"

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define JWKS_FILE_MAX (1u << 20)

static int read_jwks_file(const char *path, char **out, size_t *len, struct kms_err *err)
{
    struct stat sb;
    char *buf = NULL;
    size_t n = 0;
    int rc = -1;
    int fd = -1;

    *out = NULL;
    if (path[0] != '/') {
        kms_err_set(err, 400, "jwks_file must be an absolute path");
        goto out;
    }
    fd = open(path, O_RDONLY | O_NONBLOCK | O_NOCTTY | O_CLOEXEC);
    if (fd < 0 || fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode) || sb.st_size < 0 ||
        (uint64_t)sb.st_size > JWKS_FILE_MAX) {
        goto unreadable;
    }
    buf = malloc(JWKS_FILE_MAX + 1);
    if (buf == NULL) {
        kms_err_set(err, 500, "out of memory");
        goto out;
    }
    while (n <= JWKS_FILE_MAX) {
        ssize_t r = read(fd, buf + n, JWKS_FILE_MAX + 1 - n);
        if (r < 0) {
            goto unreadable;
        }
        if (r == 0) {
            break;
        }
        n += (size_t)r;
    }
    if (n > JWKS_FILE_MAX) {
        goto unreadable;
    }
    buf[n] = '\0';
    *out = buf;
    *len = n;
    buf = NULL;
    rc = 0;
    goto out;
unreadable:
    kms_err_set(err, 400,
                "jwks_file %s is not a readable regular file of at most 1 MiB holding a JWKS",
                path);
out:
    if (fd >= 0) {
        close(fd);
    }
    free(buf);
    return rc;
}

/* Build the key set a config names: PEM list, inline JWKS text, JWKS file. */
int kms_keyset_build(const json_t *pems, const char *jwks, const char *jwks_file,
                     struct kms_keyset **out, struct kms_err *err)
{
    struct kms_keyset *ks = NULL;
    char *file = NULL;
    size_t flen = 0;
    int rc = -1;

    *out = NULL;
    if (kms_keyset_create(&ks) != 0) {
        kms_err_set(err, 500, "out of memory");
        goto out;
    }
    size_t i;
    json_t *v;
    json_array_foreach(pems, i, v)
    {
        if (!json_is_string(v) || kms_keyset_add_pem(ks, json_string_value(v), i, err) != 0) {
            if (!json_is_string(v)) {
                kms_err_set(err, 400, "pem_keys[%zu]: expected a string", i);
            }
            goto out;
        }
    }
    if (jwks != NULL && jwks[0] != '\0' && kms_keyset_add_jwks(ks, jwks, strlen(jwks), err) != 0) {
        goto out;
    }
    if (jwks_file != NULL && jwks_file[0] != '\0') {
        if (read_jwks_file(jwks_file, &file, &flen, err) != 0) {
            goto out;
        }
        /* Say nothing about the file's content, nor whether it exists: the same message as
         * an unreadable file (docs/auth.md), so the answer is no oracle for the host's files */
        if (kms_keyset_add_jwks(ks, file, flen, err) != 0) {
            kms_err_set(err, 400,
                        "jwks_file %s is not a readable regular file of at most 1 MiB holding a "
                        "JWKS",
                        jwks_file);
            goto out;
        }
    }
    *out = ks;
    ks = NULL;
    rc = 0;
out:
    free(file);
    kms_keyset_destroy(&ks);
    return rc;
}
