/*
 * options.c - the option parser every kmsctl command uses: "--name VALUE", "--name=VALUE",
 * "-name VALUE", aliases, repeatable options and positional arguments (contract in cli.h).
 */
#include "cli/cli.h"

#include <stdio.h>
#include <string.h>

static const struct kms_cli_opt *find_opt(const struct kms_cli_opt *opts, const char *name,
                                          size_t n)
{
    for (const struct kms_cli_opt *o = opts; o->name != NULL; o++) {
        if ((strlen(o->name) == n && strncmp(o->name, name, n) == 0) ||
            (o->alias != NULL && strlen(o->alias) == n && strncmp(o->alias, name, n) == 0)) {
            return o;
        }
    }
    return NULL;
}

int kms_cli_parse(const char *prog, int argc, char **argv, const struct kms_cli_opt *opts,
                  const char **pos, size_t pos_max, size_t *npos)
{
    bool only_pos = false;
    *npos = 0;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        if (only_pos || a[0] != '-' || a[1] == '\0') {
            if (*npos == pos_max) {
                fprintf(stderr, "%s: too many arguments\n", prog);
                return -1;
            }
            pos[(*npos)++] = a;
            continue;
        }
        if (strcmp(a, "--") == 0) {
            only_pos = true;
            continue;
        }
        a += a[1] == '-' ? 2 : 1;
        const char *eq = strchr(a, '=');
        size_t n = eq ? (size_t)(eq - a) : strlen(a);
        const struct kms_cli_opt *o = find_opt(opts, a, n);
        if (o == NULL) {
            fprintf(stderr, "%s: unknown option \"%s\"\n", prog, kms_cli_esc(argv[i]));
            return -1;
        }
        if (o->flag != NULL) {
            if (eq != NULL) {
                *o->flag = strcmp(eq + 1, "false") != 0 && strcmp(eq + 1, "0") != 0;
            } else {
                *o->flag = true;
            }
            continue;
        }
        const char *val = eq ? eq + 1 : NULL;
        if (val == NULL) {
            if (i + 1 >= argc) {
                fprintf(stderr, "%s: option --%s needs a value\n", prog, o->name);
                return -1;
            }
            val = argv[++i];
        }
        if (o->list != NULL) {
            if (*o->nlist == o->list_max) {
                fprintf(stderr, "%s: --%s given too many times\n", prog, o->name);
                return -1;
            }
            o->list[(*o->nlist)++] = val;
        } else {
            *o->str = val;
        }
    }
    return 0;
}
