/*
 * migrate.c - `kmsd migrate -from=lmdb:PATH -to=postgresql:URL` (and back, or between two
 * stores of one backend): copies a store record for record, still sealed
 * (kms_storage_copy), into an empty target, in one write transaction.
 *
 * The seal key comes from -seal-key-file or the environment variable KMSD_SEAL_KEY (scrubbed
 * once read); both stores must open under it, so the source's seal check proves the key and
 * every record is checked to open before it is copied. The PostgreSQL password comes from the
 * URL, -postgresql-password-file, or libpq's own PGPASSWORD / ~/.pgpass. A PostgreSQL store
 * is opened exclusively, so the copy refuses to run while a kmsd uses that database (an LMDB
 * source must have its kmsd stopped: docs/ha.md). A URL is never printed (it may hold a
 * password): messages name the backend only.
 */
#include "server/server.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static void migrate_usage(FILE *f)
{
    fprintf(f, "Usage: kmsd migrate -from=STORE -to=STORE [-seal-key-file=FILE]\n"
               "                    [-postgresql-password-file=FILE] [-storage-map-size=BYTES]\n"
               "STORE is lmdb:PATH or postgresql:URL (a libpq URI or conninfo string).\n"
               "-storage-map-size is an LMDB store's map size (default 1073741824, as\n"
               "storage_map_size): the most an LMDB target can hold.\n"
               "The seal key is read from -seal-key-file or KMSD_SEAL_KEY; the target must be\n"
               "empty. Stop kmsd on the source first (a running one holds its store: refused).\n");
}

struct store_arg {
    enum kms_storage_backend backend;
    const char *location;
};

static int parse_store(const char *flag, const char *v, struct store_arg *out)
{
    if (strncmp(v, "lmdb:", 5) == 0 && v[5] != '\0') {
        out->backend = KMS_STORAGE_LMDB;
        out->location = v + 5;
        return 0;
    }
    if (strncmp(v, "postgresql:", 11) == 0 && v[11] != '\0') {
        out->backend = KMS_STORAGE_POSTGRESQL;
        out->location = v + 11;
        return 0;
    }
    fprintf(stderr, "kmsd migrate: -%s must be lmdb:PATH or postgresql:URL\n", flag);
    return -1;
}

/* Two existing paths naming one directory (a trailing slash, a symlink, ./). */
static bool same_directory(const char *a, const char *b)
{
    struct stat sa, sb;
    return stat(a, &sa) == 0 && stat(b, &sb) == 0 && sa.st_dev == sb.st_dev &&
           sa.st_ino == sb.st_ino;
}

/* -storage-map-size: bytes, within storage_map_size's bounds (1 MiB to 1 TiB). */
static int parse_map_size(const char *v, size_t *out)
{
    uint64_t n = 0;
    const char *p = v;

    for (; *p >= '0' && *p <= '9' && n <= ((uint64_t)1 << 40); p++)
        n = n * 10 + (uint64_t)(*p - '0');
    if (p == v || *p != '\0' || n < ((uint64_t)1 << 20) || n > ((uint64_t)1 << 40)) {
        fprintf(stderr, "kmsd migrate: -storage-map-size must be a number of bytes between 1048576 "
                        "and 1099511627776\n");
        return -1;
    }
    *out = (size_t)n;
    return 0;
}

/* "-name=value", "--name=value" or "-name value"; returns the value or NULL. */
static const char *flag_value(int argc, char **argv, int *i, const char *name)
{
    const char *a = argv[*i];
    size_t n = strlen(name);

    a += a[0] == '-' ? 1 : 0;
    a += a[0] == '-' ? 1 : 0;
    if (strncmp(a, name, n) != 0)
        return NULL;
    if (a[n] == '=')
        return a + n + 1;
    if (a[n] == '\0' && *i + 1 < argc)
        return argv[++*i];
    return NULL;
}

static int read_password(const char *path, char *pw, size_t cap)
{
    FILE *fp = fopen(path, "re");
    size_t n;
    bool more;

    if (fp == NULL) {
        fprintf(stderr, "kmsd migrate: cannot open %s: %s\n", path, strerror(errno));
        return -1;
    }
    n = fread(pw, 1, cap - 1, fp);
    more = fgetc(fp) != EOF;
    fclose(fp);
    if (more) {
        fprintf(stderr, "kmsd migrate: %s is larger than %zu bytes\n", path, cap - 2);
        return -1;
    }
    pw[n] = '\0';
    pw[strcspn(pw, "\r\n")] = '\0';
    return 0;
}

static int load_seal(const char *file, uint8_t seal[32])
{
    struct kms_err err;
    char *text;
    int rc;

    kms_err_clear(&err);
    if (file != NULL) {
        /* the file wins; a key in the environment too is scrubbed all the same */
        (void)kms_env_scrub("KMSD_SEAL_KEY");
        if (kms_seal_key_load_file(file, seal, &err) != 0) {
            fprintf(stderr, "kmsd migrate: %s\n", err.msg);
            return -1;
        }
        return 0;
    }
    if ((text = getenv("KMSD_SEAL_KEY")) == NULL) {
        fprintf(stderr, "kmsd migrate: no seal key: give -seal-key-file or set KMSD_SEAL_KEY\n");
        return -1;
    }
    rc = kms_seal_key_parse(text, seal, &err);
    (void)kms_env_scrub("KMSD_SEAL_KEY");
    if (rc != 0) {
        fprintf(stderr, "kmsd migrate: seal key from KMSD_SEAL_KEY: %s\n", err.msg);
        return -1;
    }
    return 0;
}

static const char *store_name(const struct store_arg *s)
{
    return s->backend == KMS_STORAGE_LMDB ? s->location : "postgresql";
}

static int open_store(const struct store_arg *s, bool target, const uint8_t seal[32],
                      const char *pw, size_t map_size, struct kms_storage **out)
{
    struct kms_storage_opts o = {.backend = s->backend,
                                 .map_size = map_size,
                                 .create = target,
                                 .existing = !target,
                                 .pg_password = pw,
                                 .pg_exclusive = s->backend == KMS_STORAGE_POSTGRESQL};
    struct kms_err err;

    kms_err_clear(&err);
    if (kms_storage_open(s->location, seal, &o, out, &err) != 0) {
        fprintf(stderr, "kmsd migrate: %s store %s: %s\n", target ? "target" : "source",
                store_name(s), err.msg);
        return -1;
    }
    return 0;
}

int kms_migrate_command(int argc, char **argv)
{
    struct store_arg from = {0}, to = {0};
    const char *seal_file = NULL, *pw_file = NULL, *v;
    size_t map_size = 0; /* LMDB's default */
    struct kms_storage *src = NULL, *dst = NULL;
    struct kms_err err;
    uint8_t seal[32];
    char pw[1024] = "";
    size_t n = 0;
    int rc = 1;
    bool have_from = false, have_to = false;

    for (int i = 0; i < argc; i++) {
        if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0 ||
            strcmp(argv[i], "-help") == 0) {
            migrate_usage(stdout);
            return 0;
        }
        if ((v = flag_value(argc, argv, &i, "from")) != NULL) {
            if (parse_store("from", v, &from) != 0)
                return 2;
            have_from = true;
        } else if ((v = flag_value(argc, argv, &i, "to")) != NULL) {
            if (parse_store("to", v, &to) != 0)
                return 2;
            have_to = true;
        } else if ((v = flag_value(argc, argv, &i, "seal-key-file")) != NULL) {
            seal_file = v;
        } else if ((v = flag_value(argc, argv, &i, "postgresql-password-file")) != NULL) {
            pw_file = v;
        } else if ((v = flag_value(argc, argv, &i, "storage-map-size")) != NULL) {
            if (parse_map_size(v, &map_size) != 0)
                return 2;
        } else {
            fprintf(stderr, "kmsd migrate: unknown argument \"%s\"\n", argv[i]);
            migrate_usage(stderr);
            return 2;
        }
    }
    if (!have_from || !have_to) {
        migrate_usage(stderr);
        return 2;
    }
    if (from.backend == to.backend && strcmp(from.location, to.location) == 0) {
        fprintf(stderr, "kmsd migrate: -from and -to name the same store\n");
        return 2;
    }
    if (from.backend == KMS_STORAGE_LMDB && to.backend == KMS_STORAGE_LMDB &&
        same_directory(from.location, to.location)) {
        /* two spellings of one directory (/a and /a/, a symlink): the target's open would
         * find the source's lock and blame "another kmsd" */
        fprintf(stderr, "kmsd migrate: -from and -to name the same store (%s)\n", to.location);
        return 2;
    }
    if (pw_file != NULL && read_password(pw_file, pw, sizeof pw) != 0)
        goto out;
    if (load_seal(seal_file, seal) != 0)
        goto out;
    if (open_store(&from, false, seal, pw_file != NULL ? pw : NULL, map_size, &src) != 0 ||
        open_store(&to, true, seal, pw_file != NULL ? pw : NULL, map_size, &dst) != 0)
        goto out;
    kms_err_clear(&err);
    if (kms_storage_copy(src, dst, &n, &err) != 0) {
        fprintf(stderr, "kmsd migrate: %s\n", err.msg);
        goto out;
    }
    printf("kmsd migrate: copied %zu records from %s:%s to %s:%s\n", n,
           kms_storage_backend_name(src), store_name(&from), kms_storage_backend_name(dst),
           store_name(&to));
    rc = 0;
out:
    kms_storage_close(&src);
    kms_storage_close(&dst);
    kms_memzero(seal, sizeof seal);
    kms_memzero(pw, sizeof pw);
    return rc;
}
