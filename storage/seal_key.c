/*
 * seal_key.c - loading the 32-byte seal key from a file or from text (an environment value).
 *
 * The forms follow OpenBao's `static` seal: raw bytes, hex or standard base64. A file of
 * exactly 32 bytes is taken as raw; anything else is trimmed and parsed as text. 64 hex
 * characters decode to 32 bytes and base64 of 32 bytes is 44 characters, so the two text
 * forms cannot be confused. Every buffer that held key material is wiped, and errors never
 * echo the key.
 */
#include "storage/storage.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define KMS_SEAL_KEY_LEN ((size_t)32)
#define KMS_SEAL_HEX_LEN ((size_t)64)
#define KMS_SEAL_TEXT_MAX ((size_t)1024)

static bool is_space(uint8_t c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f';
}

/* Parse trimmed text as 64 hex characters or base64 of 32 bytes; len <= KMS_SEAL_TEXT_MAX. */
static int key_text_parse(const uint8_t *text, size_t len, uint8_t key[KMS_SEAL_KEY_LEN])
{
    uint8_t tmp[KMS_SEAL_TEXT_MAX];
    size_t outlen = 0, err_at = 0;
    int rc = -1;

    while (len > 0 && is_space(text[0])) {
        text++;
        len--;
    }
    while (len > 0 && is_space(text[len - 1]))
        len--;
    if (len == KMS_SEAL_HEX_LEN && kms_hex_decode((const char *)text, len, tmp) == 0) {
        memcpy(key, tmp, KMS_SEAL_KEY_LEN);
        rc = 0;
        goto out;
    }
    if (len == 0 || len > KMS_SEAL_TEXT_MAX || kms_b64_decoded_max(len) > sizeof tmp)
        goto out;
    if (kms_b64_decode((const char *)text, len, tmp, &outlen, &err_at) != 0 ||
        outlen != KMS_SEAL_KEY_LEN)
        goto out;
    memcpy(key, tmp, KMS_SEAL_KEY_LEN);
    rc = 0;
out:
    kms_memzero(tmp, sizeof tmp);
    if (rc != 0)
        kms_memzero(key, KMS_SEAL_KEY_LEN);
    return rc;
}

int kms_seal_key_parse(const char *text, uint8_t key[32], struct kms_err *err)
{
    size_t len = text != NULL ? strnlen(text, KMS_SEAL_TEXT_MAX + 1) : 0;

    if (len > KMS_SEAL_TEXT_MAX || key_text_parse((const uint8_t *)text, len, key) != 0) {
        kms_memzero(key, KMS_SEAL_KEY_LEN);
        return kms_err_set(err, 500, "seal key must be 64 hex characters or base64 of 32 bytes");
    }
    return 0;
}

int kms_seal_key_load_file(const char *path, uint8_t key[32], struct kms_err *err)
{
    uint8_t buf[KMS_SEAL_TEXT_MAX + 1];
    struct stat sb;
    size_t n = 0;
    ssize_t r;
    int fd = -1, rc = -1;

    /* Symlinks are followed on purpose: Kubernetes mounts secrets through them. O_NONBLOCK:
     * a FIFO at the path opened (and start-up hung, silent) until a writer came; it is
     * refused below as not a regular file, on which O_NONBLOCK does nothing. */
    if ((fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK)) < 0) {
        kms_err_set(err, 500, "cannot open seal key file %s: %s", path, strerror(errno));
        goto out;
    }
    if (fstat(fd, &sb) != 0) {
        kms_err_set(err, 500, "cannot stat seal key file %s: %s", path, strerror(errno));
        goto out;
    }
    if (!S_ISREG(sb.st_mode)) {
        kms_err_set(err, 500, "seal key file %s is not a regular file", path);
        goto out;
    }
    if ((sb.st_mode & (S_IRWXG | S_IRWXO)) != 0) {
        kms_err_set(err, 500,
                    "seal key file %s must not be accessible by group or others (mode 0%03o); "
                    "run chmod 600 %s",
                    path, (unsigned)(sb.st_mode & 0777), path);
        goto out;
    }
    /* Read one byte past the limit so that an oversized file is refused, not truncated. */
    while (n < sizeof buf) {
        r = read(fd, buf + n, sizeof buf - n);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            kms_err_set(err, 500, "cannot read seal key file %s: %s", path, strerror(errno));
            goto out;
        }
        if (r == 0)
            break;
        n += (size_t)r;
    }
    if (n > KMS_SEAL_TEXT_MAX) {
        kms_err_set(err, 500, "seal key file %s is larger than 1 KiB", path);
        goto out;
    }
    if (n == KMS_SEAL_KEY_LEN) {
        memcpy(key, buf, KMS_SEAL_KEY_LEN);
    } else if (key_text_parse(buf, n, key) != 0) {
        kms_err_set(err, 500,
                    "seal key file %s must hold 32 raw bytes, 64 hex characters or base64 of "
                    "32 bytes",
                    path);
        goto out;
    }
    rc = 0;
out:
    kms_memzero(buf, sizeof buf);
    if (rc != 0)
        kms_memzero(key, KMS_SEAL_KEY_LEN);
    if (fd >= 0)
        close(fd);
    return rc;
}
