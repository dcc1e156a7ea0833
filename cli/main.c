/*
 * main.c - kmsctl: the command table and the option parser every command group shares.
 *
 * `kmsctl <group> <verb> [options] [args]`. Each group is one file with one entry point in
 * the table below; the verbs mirror `kube-dc kms …` (docs/decisions.md), so later groups
 * (keys, encrypt, …) slot in as new rows.
 */
#include "cli/cli.h"

#include <stdio.h>
#include <string.h>
#include <sys/resource.h>

#define KMSCTL_VERSION "0.1.0"

static const struct kms_cli_cmd commands[] = {
    {"audit", "verify and list the audit log", kms_cli_audit},
    {"orgs", "organizations: create, list, describe, delete", kms_cli_orgs},
    {"keys", "KMSKeys: list, describe, create, rotate, delete, ...", kms_cli_keys},
    {"encrypt", "encrypt up to 64 KiB with a KMSKey (prints vault:vN:...)", kms_cli_encrypt},
    {"decrypt", "decrypt a vault:vN:... ciphertext", kms_cli_decrypt},
    {"envelope", "encrypt/decrypt large files with a data key (NONCE|CIPHERTEXT|TAG)",
     kms_cli_envelope},
    {"apply", "create or update KMSKeys from YAML (apply -f kmskey.yaml)", kms_cli_apply},
    {"get", "print KMSKeys as kubectl does (get kmskey NAME -o yaml)", kms_cli_get},
    {"patch", "change a KMSKey's spec with a merge patch (patch kmskey NAME -p ...)",
     kms_cli_patch},
    {"login", "log in (Kubernetes or JWT) and keep the token", kms_cli_login},
};

static void usage(FILE *f)
{
    fprintf(f, "Usage: kmsctl <command> [options]\n\nCommands:\n");
    for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++) {
        fprintf(f, "  %-10s %s\n", commands[i].name, commands[i].summary);
    }
    fprintf(f, "  %-10s %s\n\n", "version", "print the version");
    fprintf(f, "Global options (anywhere on the line): --addr URL, --token T, -n/--namespace ORG,\n"
               "--project P, -o table|json|yaml, --ca-cert FILE, --client-cert FILE,\n"
               "--client-key FILE, --tls-skip-verify.\n"
               "Environment: KMS_ADDR (or VAULT_ADDR, BAO_ADDR), KMS_TOKEN (or VAULT_TOKEN),\n"
               "KMS_TOKEN_FILE, KMS_NAMESPACE (or VAULT_NAMESPACE), KMS_PROJECT, VAULT_CACERT,\n"
               "KMS_AUDIT_FILE.\n"
               "Exit status: 0 success, 1 the server (or the data) said no, 2 usage.\n"
               "Run `kmsctl help <command>` (or `kmsctl <command> --help`) for a command's\n"
               "options; docs/cli.md has them all.\n");
}

#define VERSION_USAGE "Usage: kmsctl version\n\nPrints kmsctl's version.\n"
#define HELP_USAGE                                                                                 \
    "Usage: kmsctl help [COMMAND [VERB]]\n\nPrints the help of kmsctl or of one command.\n"

static bool is_help_flag(const char *a)
{
    return strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0;
}

/*
 * `kmsctl help [COMMAND [VERB]]`: the command's own --help text, so there is one help text
 * per command (the man page is generated from these too, cli/man/gen-man.sh).
 */
static int help(int argc, char **argv)
{
    char flag[] = "--help";
    char *av[4];
    if (argc < 3) {
        usage(stdout);
        return KMS_CLI_EXIT_OK;
    }
    if (strcmp(argv[2], "version") == 0) {
        fputs(VERSION_USAGE, stdout);
        return KMS_CLI_EXIT_OK;
    }
    /* `kmsctl help --help` as `kmsctl help help`, as every other command takes --help */
    if (strcmp(argv[2], "help") == 0 || is_help_flag(argv[2])) {
        fputs(HELP_USAGE, stdout);
        return KMS_CLI_EXIT_OK;
    }
    for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++) {
        if (strcmp(commands[i].name, argv[2]) == 0) {
            int n = 0;
            av[n++] = argv[2];
            if (argc >= 4) {
                av[n++] = argv[3];
            }
            av[n++] = flag;
            av[n] = NULL;
            return commands[i].run(n, av);
        }
    }
    fprintf(stderr, "kmsctl: unknown command \"%s\"\n", kms_cli_esc(argv[2]));
    usage(stderr);
    return KMS_CLI_EXIT_USAGE;
}

int main(int argc, char **argv)
{
    /* no core file: kmsctl holds plaintexts, data keys and the token in memory, and a crash
       or Ctrl-backslash (SIGQUIT) would write them to disk (kmsd does the same) */
    struct rlimit nocore = {0, 0};
    (void)setrlimit(RLIMIT_CORE, &nocore);
    if (argc < 2) {
        usage(stderr);
        return KMS_CLI_EXIT_USAGE;
    }
    kms_cli_hoist_command(argc, argv);
    const char *cmd = argv[1];
    if (strcmp(cmd, "help") == 0) {
        return help(argc, argv);
    }
    if (strcmp(cmd, "-h") == 0 || strcmp(cmd, "--help") == 0) {
        usage(stdout);
        return KMS_CLI_EXIT_OK;
    }
    if (strcmp(cmd, "version") == 0 || strcmp(cmd, "--version") == 0) {
        /* `kmsctl version --help` is `kmsctl help version`, as for every command */
        for (int i = 2; i < argc && strcmp(argv[i], "--") != 0; i++) {
            if (is_help_flag(argv[i])) {
                fputs(VERSION_USAGE, stdout);
                return KMS_CLI_EXIT_OK;
            }
        }
        printf("kmsctl v%s\n", KMSCTL_VERSION);
        return KMS_CLI_EXIT_OK;
    }
    for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++) {
        if (strcmp(commands[i].name, cmd) == 0) {
            return commands[i].run(argc - 1, argv + 1);
        }
    }
    fprintf(stderr, "kmsctl: unknown command \"%s\"\n", kms_cli_esc(cmd));
    usage(stderr);
    return KMS_CLI_EXIT_USAGE;
}
