/*
 * fuzz_config.c - config_build on an arbitrary configuration file.
 *
 * The input is the file's contents (written to a memfd, read through
 * /proc/self/fd/N). A file that builds must dump (config_dump, what
 * --check-config prints) to text that builds again and dumps identically:
 * the printed configuration is itself a valid configuration file with the
 * same meaning. A refused file must come with a message.
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

    put_file(dump_fd, text1, len1);
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
