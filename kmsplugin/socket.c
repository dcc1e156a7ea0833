/*
 * socket.c - the plugin's unix socket: created with mode 0600 (or the configured mode and
 * group) after a bind under kmsd's umask 077, so it is never reachable more widely; the group
 * and mode are set without following a symlink put at the path meanwhile. A file
 * already at the path is replaced only when it is a socket nobody answers on (left by a
 * crash); a regular file, a directory, or a socket another process serves is an error.
 */
#include "kmsplugin/kmsplugin_int.h"

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

static int fill_addr(const char *path, struct sockaddr_un *sa, struct kms_err *err)
{
    memset(sa, 0, sizeof(*sa));
    sa->sun_family = AF_UNIX;
    if (path == NULL || path[0] == '\0') {
        return kms_err_set(err, 400, "kms plugin: no socket path");
    }
    if (strlen(path) >= sizeof(sa->sun_path)) {
        return kms_err_set(err, 400, "kms plugin socket path longer than %zu bytes: %s",
                           sizeof(sa->sun_path) - 1, path);
    }
    memcpy(sa->sun_path, path, strlen(path) + 1);
    return 0;
}

/* Remove a stale socket file at path: 0 when the path is free now, -1 with err otherwise. */
static int clear_stale(const char *path, const struct sockaddr_un *sa, struct kms_err *err)
{
    struct stat st;
    if (lstat(path, &st) != 0) {
        if (errno == ENOENT) {
            return 0;
        }
        return kms_err_set(err, 500, "kms plugin socket %s: %s", path, strerror(errno));
    }
    if (!S_ISSOCK(st.st_mode)) {
        return kms_err_set(err, 400,
                           "kms plugin socket %s: a file that is not a socket is in the way; "
                           "not removing it",
                           path);
    }
    /* non-blocking: a live server whose listen backlog is full answers EAGAIN at once instead
     * of holding this start-up forever */
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0) {
        return kms_err_set(err, 500, "socket: %s", strerror(errno));
    }
    int c = connect(fd, (const struct sockaddr *)sa, sizeof(*sa));
    int e = errno;
    close(fd);
    if (c == 0 || e == EAGAIN || e == EINPROGRESS) {
        return kms_err_set(err, 400, "kms plugin socket %s: another process is serving it", path);
    }
    if (e != ECONNREFUSED) {
        return kms_err_set(err, 500, "kms plugin socket %s: %s", path, strerror(e));
    }
    /* nobody listens: a socket left behind by a process that died */
    if (unlink(path) != 0 && errno != ENOENT) {
        return kms_err_set(err, 500, "kms plugin socket %s: cannot remove the stale socket: %s",
                           path, strerror(errno));
    }
    return 0;
}

static int group_id(const char *g, gid_t *out, struct kms_err *err)
{
    char *end = NULL;
    errno = 0;
    unsigned long n = strtoul(g, &end, 10);
    if (g[0] != '\0' && *end == '\0' && errno == 0) {
        *out = (gid_t)n;
        return 0;
    }
    struct group grp, *res = NULL;
    char buf[4096];
    if (getgrnam_r(g, &grp, buf, sizeof(buf), &res) != 0 || res == NULL) {
        return kms_err_set(err, 400, "kms plugin socket group \"%s\": no such group", g);
    }
    *out = res->gr_gid;
    return 0;
}

#ifdef KMS_TEST_HOOKS
void (*kms_plugin_socket_bound_hook)(const char *path);
#endif

/* chmod of path without following a symlink. glibc does it through /proc/self/fd and answers
 * EOPNOTSUPP both for a link and when /proc is not mounted (a bare chroot): in that case, for a
 * path lstat has just seen to be a socket, a plain chmod. */
static int chmod_nofollow(const char *path, mode_t mode)
{
    struct stat st;
    if (fchmodat(AT_FDCWD, path, mode, AT_SYMLINK_NOFOLLOW) == 0) {
        return 0;
    }
    int e = errno;
    if (e == EOPNOTSUPP && lstat(path, &st) == 0 && S_ISSOCK(st.st_mode)) {
        return chmod(path, mode);
    }
    errno = e;
    return -1;
}

int kms_plugin_socket_open(const struct kms_plugin_opts *o, int *out, struct kms_err *err)
{
    struct sockaddr_un sa;
    unsigned mode = o->socket_mode ? o->socket_mode : 0600;
    gid_t gid = 0;
    *out = -1;
    if (mode & ~0777u) {
        return kms_err_set(err, 400, "kms plugin socket mode %o: permission bits only", mode);
    }
    if (mode & 0002u) {
        /* connecting to a unix socket takes write permission: every local user could call
         * Decrypt on the cluster's DEK seeds */
        return kms_err_set(err, 400,
                           "kms plugin socket mode %04o lets every local user call the plugin: "
                           "share it with kube-apiserver's group instead (socket_group, mode "
                           "0660)",
                           mode);
    }
    if (fill_addr(o->socket_path, &sa, err) != 0 ||
        (o->socket_group != NULL && o->socket_group[0] != '\0' &&
         group_id(o->socket_group, &gid, err) != 0) ||
        clear_stale(o->socket_path, &sa, err) != 0) {
        return -1;
    }
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0) {
        return kms_err_set(err, 500, "socket: %s", strerror(errno));
    }
    /* kmsd runs with umask 077 (the sidecar sets it too): the socket is bound owner-only,
     * then set to `mode`, so it is never reachable more widely than configured */
    int b = bind(fd, (const struct sockaddr *)&sa, sizeof(sa));
    int e = errno;
    if (b != 0) {
        close(fd);
        return kms_err_set(err, 500, "kms plugin socket %s: bind: %s", o->socket_path, strerror(e));
    }
#ifdef KMS_TEST_HOOKS
    if (kms_plugin_socket_bound_hook != NULL) {
        kms_plugin_socket_bound_hook(o->socket_path);
    }
#endif
    /* Group and mode are set through the path, which a process that may write to the socket's
     * directory could have swapped for a symlink since the bind: neither call follows one (a
     * link gets lchown'd and refuses the chmod), so no other file's group or mode is changed,
     * and a path that is no longer a socket fails the start. */
    struct stat st;
    errno = 0;
    if ((o->socket_group != NULL && o->socket_group[0] != '\0' &&
         fchownat(AT_FDCWD, o->socket_path, (uid_t)-1, gid, AT_SYMLINK_NOFOLLOW) != 0) ||
        chmod_nofollow(o->socket_path, (mode_t)mode) != 0 || lstat(o->socket_path, &st) != 0 ||
        !S_ISSOCK(st.st_mode)) {
        e = errno;
        close(fd);
        if (lstat(o->socket_path, &st) == 0 && S_ISSOCK(st.st_mode)) {
            unlink(o->socket_path); /* ours: the bind made it */
        } else if (e == EOPNOTSUPP || e == 0) {
            /* whatever is there now is not ours: left as it is */
            return kms_err_set(err, 500,
                               "kms plugin socket %s: the path was replaced after the bind "
                               "(it is no longer a socket); not starting",
                               o->socket_path);
        }
        return kms_err_set(err, 500, "kms plugin socket %s: %s", o->socket_path, strerror(e));
    }
    if (listen(fd, 128) != 0) {
        e = errno;
        close(fd);
        unlink(o->socket_path);
        return kms_err_set(err, 500, "kms plugin socket %s: listen: %s", o->socket_path,
                           strerror(e));
    }
    *out = fd;
    return 0;
}
