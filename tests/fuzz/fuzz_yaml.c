/* fuzz_yaml.c - kmsctl apply's YAML reader (libyaml events to JSON) on arbitrary documents. */
#include "cli/cli.h"

#include <jansson.h>
#include <stdlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    json_t *docs = json_array();
    if (docs == NULL) {
        return 0;
    }
    (void)kms_cli_yaml_parse("fuzz", data, size, docs);
    json_decref(docs);
    return 0;
}
