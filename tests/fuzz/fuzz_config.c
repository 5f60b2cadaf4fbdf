/*
 * fuzz_config.c - config_build on an arbitrary configuration file.
 *
 * The input is the file's contents (written to a memfd, read through
 * /proc/self/fd/N). A file that builds must dump (config_dump, what
 * --check-config prints) to text that builds again and dumps identically:
 * the printed configuration is itself a valid configuration file with the
 * same meaning. A secret given itself is printed as FO_SECRET_MASK, which a
 * file may not give back: such a dump must be refused for that reason, and
 * with each mask replaced by a stand-in secret it must round-trip. A refused
 * file must come with a message.
 *
 * FUZZ_IGNORE_KNOWN=1 in the environment skips the round trip for dumps that
 * hit a bug already filed in crashes-pending/fuzz_config/ (a value starting
 * with '#' read back as a comment; a dumped line over FO_MAX_CONFIG_LINE),
 * so a long run can look for other bugs.
 *
 * `listen` is resolved with getaddrinfo; here getaddrinfo is wrapped to
 * numeric hosts (plus "localhost"), so fuzzing never sends DNS queries.
 */
#include <dlfcn.h>
#include <netdb.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "config.h"
#include "fuzz_common.h"

typedef int (*gai_fn)(const char *, const char *, const struct addrinfo *, struct addrinfo **);

int getaddrinfo(const char *node, const char *service, const struct addrinfo *hints,
                struct addrinfo **res);

int getaddrinfo(const char *node, const char *service, const struct addrinfo *hints,
                struct addrinfo **res)
{
    static gai_fn real;
    struct addrinfo h;

    if (real == NULL) {
        *(void **)&real = dlsym(RTLD_NEXT, "getaddrinfo");
        if (real == NULL)
            abort();
    }
    if (hints != NULL)
        h = *hints;
    else
        memset(&h, 0, sizeof(h));
    if (node != NULL && strcmp(node, "localhost") != 0)
        h.ai_flags |= AI_NUMERICHOST;
    return real(node, service, &h, res);
}

static int in_fd = -1, dump_fd = -1;
static char in_path[64], dump_path[64];

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    in_fd = memfd_create("fuzz_config_in", 0);
    dump_fd = memfd_create("fuzz_config_dump", 0);
    if (in_fd < 0 || dump_fd < 0)
        abort();
    (void)snprintf(in_path, sizeof(in_path), "/proc/self/fd/%d", in_fd);
    (void)snprintf(dump_path, sizeof(dump_path), "/proc/self/fd/%d", dump_fd);
    return 0;
}

static void put_file(int fd, const void *data, size_t size)
{
    const char *p = data;

    if (ftruncate(fd, 0) != 0 || lseek(fd, 0, SEEK_SET) != 0)
        abort();
    while (size > 0) {
        ssize_t n = write(fd, p, size);
        if (n <= 0)
            abort();
        p += n;
        size -= (size_t)n;
    }
}

/* config_dump into a malloc'd string. */
static char *dump(const struct config *cfg, size_t *len)
{
    char *text = NULL;
    FILE *f = open_memstream(&text, len);

    if (f == NULL)
        abort();
    config_dump(cfg, f);
    if (fclose(f) != 0)
        abort();
    return text;
}

/* 1 if the dump shows a known, filed round-trip bug (see the top). */
static int known_bug(const char *text)
{
    static int ignore = -1;

    if (ignore < 0)
        ignore = getenv("FUZZ_IGNORE_KNOWN") != NULL;
    if (!ignore)
        return 0;
    for (const char *line = text; *line != '\0';) {
        const char *end = strchr(line, '\n');
        size_t n = end ? (size_t)(end - line) : strlen(line);
        if (n > FO_MAX_CONFIG_LINE || memmem(line, n, " #", 2) != NULL)
            return 1;
        line += end ? n + 1 : n;
    }
    return 0;
}

/* 1 if line [p, p + n) ends in the value FO_SECRET_MASK: "auth_token = ***"
 * or "inject_header = PREFIX NAME: ***". */
static int masked_line(const char *p, size_t n)
{
    size_t m = strlen(FO_SECRET_MASK);

    _Static_assert(sizeof(FO_SECRET_MASK) - 1 == 3, "the stand-in below is as long as the mask");
    if (n < m + 2 || memcmp(p + n - m, FO_SECRET_MASK, m) != 0)
        return 0;
    if (n == strlen("auth_token = ") + m && memcmp(p, "auth_token = ", 13) == 0)
        return 1;
    return n > 16 + m && memcmp(p, "inject_header = ", 16) == 0 && p[n - m - 2] == ':' &&
           p[n - m - 1] == ' ';
}

/* The dump with every masked secret given a stand-in value ("xyz", as long as
 * the mask, so the text keeps its length), and
 * whether there was one; a new string (free()). */
static char *unmask(const char *text, size_t len, size_t *out_len, int *masked)
{
    char *out = malloc(len + 1), *o = out;
    const char *line = text, *end = text + len;

    FUZZ_ASSERT(out != NULL);
    *masked = 0;
    while (line < end) {
        const char *nl = memchr(line, '\n', (size_t)(end - line));
        size_t n = nl ? (size_t)(nl - line) : (size_t)(end - line);
        if (masked_line(line, n)) {
            size_t keep = n - strlen(FO_SECRET_MASK);
            memcpy(o, line, keep);
            memcpy(o + keep, "xyz", 3);
            o += keep + 3;
            *masked = 1;
        } else {
            memcpy(o, line, n);
            o += n;
        }
        if (nl != NULL)
            *o++ = '\n';
        line += n + (nl != NULL);
    }
    *o = '\0';
    *out_len = (size_t)(o - out);
    return out;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct config *cfg = NULL, *again = NULL;
    struct fo_msg msg = { "" };
    char *text1, *text2;
    size_t len1 = 0, len2 = 0;
    fo_err err;

    put_file(in_fd, data, size);
    err = config_build(in_path, NULL, 0, &cfg, &msg);
    if (err != FO_OK) {
        FUZZ_ASSERT(cfg == NULL);
        FUZZ_ASSERT(msg.text[0] != '\0');
        /* A file error names the file (and, for a bad line, the line). */
        FUZZ_ASSERTF(strncmp(msg.text, in_path, strlen(in_path)) == 0, "%s", msg.text);
        return 0;
    }
    FUZZ_ASSERT(cfg != NULL);
    FUZZ_ASSERT(cfg->max_batch >= 1 && cfg->workers >= 1);
    /* The built-in deny entries are always there. */
    FUZZ_ASSERT(cfg->deny.n >= 6);
    text1 = dump(cfg, &len1);
    if (known_bug(text1)) {
        free(text1);
        config_unref(cfg);
        return 0;
    }

    int masked;
    size_t plain_len;
    char *plain = unmask(text1, len1, &plain_len, &masked);
    if (masked) {
        /* The dump as printed is refused: the mask is never taken for a secret. */
        put_file(dump_fd, text1, len1);
        msg.text[0] = '\0';
        err = config_build(dump_path, NULL, 0, &again, &msg);
        FUZZ_ASSERTF(err == FO_EINVAL && strstr(msg.text, "in place of a secret") != NULL,
                     "a masked dump was not refused for its mask: %s\n--- dump:\n%s", msg.text,
                     text1);
    }
    put_file(dump_fd, plain, plain_len);
    free(plain);
    msg.text[0] = '\0';
    err = config_build(dump_path, NULL, 0, &again, &msg);
    FUZZ_ASSERTF(err == FO_OK, "the dump does not build again: %s\n--- dump:\n%s", msg.text,
                 text1);
    text2 = dump(again, &len2);
    FUZZ_ASSERTF(len1 == len2 && memcmp(text1, text2, len1) == 0,
                 "the dump changed on a round trip\n--- first:\n%s--- second:\n%s", text1, text2);
    FUZZ_ASSERT(again->deny.n == cfg->deny.n && again->allow.n == cfg->allow.n);
    free(text1);
    free(text2);
    config_unref(again);
    config_unref(cfg);
    return 0;
}
