/* fuzz_config.c - the JSON configuration loader on arbitrary files: errors, never crashes. */
#include "server/server.h"

#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static char path[64];
    struct kms_config cfg;
    struct kms_err err;
    if (path[0] == '\0') {
        snprintf(path, sizeof(path), "/tmp/kms-fuzz-config-%d.json", (int)getpid());
    }
    FILE *f = fopen(path, "wb");
    if (f == NULL) {
        abort();
    }
    if (size > 0 && fwrite(data, 1, size, f) != size) {
        abort();
    }
    fclose(f);
    kms_config_default(&cfg);
    (void)kms_config_load(path, &cfg, &err);
    return 0;
}
