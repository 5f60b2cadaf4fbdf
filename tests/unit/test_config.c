/*
 * test_config.c - config.h: building a configuration from a file and
 * overrides, the errors that name FILE:LINE, config_dump, flag names, and
 * that config/fanoutd.conf is the table's sample (tests run from the repo
 * root, as make runs them).
 *
 * Config files are written to mkstemp files that each test removes.
 */
#include <arpa/inet.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/un.h>
#include <unistd.h>

#include "config.h"
#include "harness.h"

#define SAMPLE_PATH "config/fanoutd.conf"

/* The contract's table, as config_dump prints the defaults. */
static const char *const default_lines[] = {
    "listen = 127.0.0.1:8080", "workers = 64", "queue_capacity = 10000", "max_batch = 1000",
    "max_body_bytes = 1048576", "max_response_bytes = 8388608", "max_answer_bytes = 67108864",
    "default_timeout_ms = 10000", "max_timeout_ms = 60000", "batch_timeout_ms = 30000",
    "max_redirects = 5", "allow =",
    "deny = 169.254.0.0/16, fe80::/10, 0.0.0.0/8, 224.0.0.0/4, ff00::/8, 255.255.255.255/32",
    "forward_headers =", "auth_token =", "per_host_limit = 0", "shutdown_grace_ms = 10000",
    "max_connections = 1024", "client_timeout_ms = 30000", "log_level = info",
    "loop_token = fanoutd", "listen_mode = 0660", "reuse_port = off",
    /* share */
    "coalesce = off", "cache_ttl_ms = 0", "cache_max_bytes = 67108864",
    "inject_header =", "sensitive_headers =", "retries = 0", "max_retries = 5",
    "retry_backoff_ms = 100", "retry_backoff_max_ms = 5000", "breaker_failures = 0",
    "breaker_open_ms = 30000", "per_host_rate = 0", "stream_heartbeat_ms = 10000", /* streaming */
};

/* Writes text to a new temporary file; path gets its name. */
static int write_temp(const char *text, char *path, size_t size)
{
    int fd;
    size_t len = strlen(text);

    (void)snprintf(path, size, "/tmp/fanoutd-unit-XXXXXX");
    if ((fd = mkstemp(path)) < 0)
        return 0;
    if (write(fd, text, len) != (ssize_t)len) {
        close(fd);
        unlink(path);
        return 0;
    }
    close(fd);
    return 1;
}

/* config_dump as a malloc'd string (caller frees). */
static char *dump_text(const struct config *cfg)
{
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);

    if (f == NULL)
        return NULL;
    config_dump(cfg, f);
    fclose(f);
    return text;
}

/* 1 if text has `line` as a whole line. */
static int has_line(const char *text, const char *line)
{
    size_t n = strlen(line);

    for (const char *p = text; p != NULL && *p; p = strchr(p, '\n'), p = p ? p + 1 : NULL) {
        if (strncmp(p, line, n) == 0 && (p[n] == '\n' || p[n] == '\0'))
            return 1;
    }
    return 0;
}

static size_t count_lines(const char *text)
{
    size_t n = 0;

    for (; *text; text++)
        n += *text == '\n';
    return n;
}

/* Builds from a file holding `text` plus overrides; NULL on error (msg says). */
static struct config *build_from(const char *text, const struct config_override *ov, size_t nov,
                                 struct fo_msg *msg, char *path, size_t size)
{
    struct config *cfg = NULL;

    if (!write_temp(text, path, size)) {
        CHECK_FAIL_("cannot write a temporary config file");
        return NULL;
    }
    if (config_build(path, ov, nov, &cfg, msg) != FO_OK)
        cfg = NULL;
    unlink(path);
    return cfg;
}

static void test_defaults_dump(void)
{
    struct config *cfg = NULL;
    struct fo_msg msg = { "" };
    char *text;

    CHECK_EQ_INT(config_build(NULL, NULL, 0, &cfg, &msg), FO_OK);
    if (cfg == NULL)
        return;
    text = dump_text(cfg);
    CHECK(text != NULL);
    if (text != NULL) {
        CHECK_EQ_INT(count_lines(text), FO_ARRAY_LEN(default_lines));
        for (size_t i = 0; i < FO_ARRAY_LEN(default_lines); i++)
            CHECK_CASE(has_line(text, default_lines[i]), default_lines[i]);
        CHECK(strstr(text, " \n") == NULL); /* "key =" has no trailing blank */
    }
    CHECK_EQ_INT(cfg->workers, 64);
    CHECK_EQ_INT(cfg->deny.n, 6);
    CHECK_EQ_INT(cfg->allow.n, 0);
    CHECK_STR(cfg->auth_token, "");
    CHECK_EQ_INT(cfg->listen_addr.ss_family, AF_INET);
    free(text);
    config_unref(cfg);
}

static void test_file_values(void)
{
    static const char file[] =
        "# whole-line comment\n"
        "\n"
        "   # indented comment\n"
        "listen = 127.0.0.1:9099   # trailing comment\n"
        "workers=8\n"
        "\t\n"
        "  queue_capacity   =   77  \n"
        "allow = 10.1.0.0/16, 192.168.0.0/24\n"
        "deny = 10.0.0.0/8,172.16.0.0/12 # more\n"
        "forward_headers = X-Request-Id, Accept-Language\n"
        "auth_token = s3cret#part\n"
        "per_host_limit = 4\n"
        "log_level = debug\n"
        "client_timeout_ms = 0\n"
        "max_redirects = 0\n"
        "# the end, no newline after the last line\n"
        "max_batch = 12";
    char path[64];
    struct fo_msg msg = { "" };
    struct config *cfg = build_from(file, NULL, 0, &msg, path, sizeof(path));
    char *text;

    if (cfg == NULL) {
        CHECK_FAIL_("config_build failed: %s", msg.text);
        return;
    }
    CHECK_STR(cfg->listen, "127.0.0.1:9099");
    CHECK_EQ_INT(cfg->workers, 8);
    CHECK_EQ_INT(cfg->queue_capacity, 77);
    CHECK_EQ_INT(cfg->per_host_limit, 4);
    CHECK_EQ_INT(cfg->client_timeout_ms, 0);
    CHECK_EQ_INT(cfg->max_redirects, 0);
    CHECK_EQ_INT(cfg->max_batch, 12);
    CHECK_EQ_INT(cfg->allow.n, 2);
    CHECK_EQ_INT(cfg->deny.n, 8); /* 6 defaults + 2 */
    CHECK_EQ_INT(cfg->forward_headers.n, 2);
    CHECK_STR(cfg->auth_token, "s3cret#part"); /* '#' inside a value is not a comment */
    CHECK_EQ_INT(ntohs(((struct sockaddr_in *)&cfg->listen_addr)->sin_port), 9099);
    text = dump_text(cfg);
    if (text != NULL) {
        CHECK_EQ_INT(count_lines(text), FO_ARRAY_LEN(default_lines));
        CHECK(has_line(text, "listen = 127.0.0.1:9099"));
        CHECK(has_line(text, "workers = 8"));
        CHECK(has_line(text, "allow = 10.1.0.0/16, 192.168.0.0/24"));
        CHECK(has_line(text,
                       "deny = 169.254.0.0/16, fe80::/10, 0.0.0.0/8, 224.0.0.0/4, "
                       "ff00::/8, 255.255.255.255/32, 10.0.0.0/8, 172.16.0.0/12"));
        CHECK(has_line(text, "forward_headers = X-Request-Id, Accept-Language"));
        CHECK(has_line(text, "auth_token = ***")); /* never the token itself */
        CHECK(has_line(text, "log_level = debug"));
        CHECK(has_line(text, "per_host_limit = 4"));
        CHECK(has_line(text, "client_timeout_ms = 0"));
    }
    free(text);
    config_unref(cfg);
}

static void test_empty_lists(void)
{
    char path[64];
    struct fo_msg msg = { "" };
    struct config *cfg = build_from("allow =\nforward_headers =   \nauth_token =\ndeny =\n", NULL,
                                    0, &msg, path, sizeof(path));
    char *text;

    if (cfg == NULL) {
        CHECK_FAIL_("config_build failed: %s", msg.text);
        return;
    }
    CHECK_EQ_INT(cfg->allow.n, 0);
    CHECK_EQ_INT(cfg->forward_headers.n, 0);
    CHECK_EQ_INT(cfg->deny.n, 6); /* an empty deny keeps the defaults */
    text = dump_text(cfg);
    if (text != NULL) {
        CHECK(has_line(text, "allow ="));
        CHECK(has_line(text, "forward_headers ="));
        CHECK(has_line(text, "auth_token ="));
        CHECK(strstr(text, "= \n") == NULL);
    }
    free(text);
    config_unref(cfg);
}

static void test_file_errors_name_line(void)
{
    static const struct {
        const char *text;
        int line;
    } cases[] = {
        { "workers = 8\nbogus = 1\n", 2 }, /* unknown key */
        { "\n# c\nworkers = abc\n", 3 },   /* bad number */
        { "workers = -1\n", 1 },           /* negative */
        { "max_batch = -5\n", 1 },
        { "workers = 0\n", 1 },        /* below the minimum */
        { "max_redirects = 51\n", 1 }, /* above the maximum */
        { "workers = 99999999999999999999999\n", 1 },
        { "workers = 1.5\n", 1 },
        { "workers = 0x10\n", 1 },
        { "workers = 8 eight\n", 1 },
        { "workers =\n", 1 },
        { "log_level = info\ndeny = 10.0.0.1/8\n", 2 }, /* bad CIDR (host bits) */
        { "allow = 10.0.0.0/8, 300.0.0.0/8\n", 1 },
        { "allow = nonsense\n", 1 },
        { "log_level = verbose\n", 1 },
        { "listen = 127.0.0.1\n", 1 }, /* no port */
        { "listen = [::1]\n", 1 },
        { "listen = 127.0.0.1:0\n", 1 },
        { "listen = 127.0.0.1:65536\n", 1 },
        { "listen = :8080\n", 1 },
        { "workers = 4\nqueue_capacity = 9\nworkers = 5\n", 3 }, /* duplicate key */
        { "workers 4\n", 1 },                                    /* no '=' */
        { "auth_token = two words\n", 1 },
        { "workers = 4\nauth_token = ***\n", 2 }, /* --check-config's mask, loaded back */
        { "inject_header = http://h/ X-Key: ***\n", 1 },
    };

    for (size_t i = 0; i < FO_ARRAY_LEN(cases); i++) {
        char path[64], where[96];
        struct fo_msg msg = { "" };
        struct config *cfg = build_from(cases[i].text, NULL, 0, &msg, path, sizeof(path));

        CHECK_CASE(cfg == NULL, cases[i].text);
        config_unref(cfg);
        (void)snprintf(where, sizeof(where), "%s:%d:", path, cases[i].line);
        if (strstr(msg.text, where) == NULL)
            CHECK_FAIL_("case %zu: message '%s' does not name %s", i, msg.text, where);
    }
}

static void test_missing_file(void)
{
    struct config *cfg = NULL;
    struct fo_msg msg = { "" };

    CHECK_EQ_INT(config_build("/nonexistent/fanoutd.conf", NULL, 0, &cfg, &msg), FO_EINVAL);
    CHECK(cfg == NULL);
    CHECK(strstr(msg.text, "/nonexistent/fanoutd.conf") != NULL);
}

static void test_overrides(void)
{
    static const struct config_override ov[] = {
        { "workers", "16" },
        { "deny", "10.0.0.0/8" },
        { "log_level", "warn" },
        { "workers", "17" }, /* later overrides win */
        { "loop_token", "edge-1.example:8080" },
    };
    static const struct config_override bad[][1] = {
        { { "workers", "zero" } },     { { "workers", "-3" } },
        { { "no_such_key", "1" } },    { { "deny", "10.0.0.1/8" } },
        { { "listen", "localhost" } }, { { "log_level", "loud" } },
        { { "loop_token", "" } },      { { "loop_token", "a,b" } },
        { { "loop_token", "a;b" } },   { { "loop_token", "caf\xc3\xa9" } },
    };
    char path[64];
    struct fo_msg msg = { "" };
    struct config *cfg = build_from("workers = 8\nmax_batch = 5\nlog_level = error\n", ov,
                                    FO_ARRAY_LEN(ov), &msg, path, sizeof(path));

    if (cfg == NULL) {
        CHECK_FAIL_("config_build failed: %s", msg.text);
    } else {
        CHECK_EQ_INT(cfg->workers, 17);
        CHECK_STR(cfg->loop_token, "edge-1.example:8080");
        CHECK_EQ_INT(cfg->max_batch, 5); /* from the file */
        CHECK_EQ_INT(cfg->deny.n, 7);
        char *text = dump_text(cfg);
        CHECK(text != NULL && has_line(text, "log_level = warn"));
        CHECK(text != NULL && has_line(text,
                                       "deny = 169.254.0.0/16, fe80::/10, 0.0.0.0/8, "
                                       "224.0.0.0/4, ff00::/8, 255.255.255.255/32, "
                                       "10.0.0.0/8"));
        free(text);
        config_unref(cfg);
    }
    for (size_t i = 0; i < FO_ARRAY_LEN(bad); i++) {
        cfg = NULL;
        msg.text[0] = '\0';
        CHECK_CASE(config_build(NULL, bad[i], 1, &cfg, &msg) == FO_EINVAL, bad[i][0].value);
        CHECK_CASE(cfg == NULL && msg.text[0] != '\0', bad[i][0].value);
    }
}

static void test_listen_forms(void)
{
    static const struct {
        const char *listen;
        int family;
        unsigned port;
    } cases[] = {
        { "[::1]:8080", AF_INET6, 8080 },     { "[::]:9000", AF_INET6, 9000 },
        { "127.0.0.1:8080", AF_INET, 8080 },  { "0.0.0.0:1", AF_INET, 1 },
        { "10.0.0.1:65535", AF_INET, 65535 },
    };

    for (size_t i = 0; i < FO_ARRAY_LEN(cases); i++) {
        struct config_override ov = { "listen", cases[i].listen };
        struct config *cfg = NULL;
        struct fo_msg msg = { "" };

        CHECK_CASE(config_build(NULL, &ov, 1, &cfg, &msg) == FO_OK, cases[i].listen);
        if (cfg == NULL)
            continue;
        CHECK_CASE(cfg->listen_addr.ss_family == cases[i].family, cases[i].listen);
        unsigned port = cases[i].family == AF_INET6
                            ? ntohs(((struct sockaddr_in6 *)&cfg->listen_addr)->sin6_port)
                            : ntohs(((struct sockaddr_in *)&cfg->listen_addr)->sin_port);
        CHECK_CASE(port == cases[i].port, cases[i].listen);
        if (cases[i].family == AF_INET6 && strcmp(cases[i].listen, "[::1]:8080") == 0)
            CHECK(memcmp(&((struct sockaddr_in6 *)&cfg->listen_addr)->sin6_addr,
                         &in6addr_loopback, 16) == 0);
        CHECK_STR(cfg->listen, cases[i].listen);
        config_unref(cfg);
    }
}

/* listen = unix:/path, listen_mode and reuse_port: parsed, printed, refused. */
static void test_listen_unix_mode_reuse(void)
{
    static const struct config_override good[] = {
        { "listen", "unix:/run/fanoutd/fanoutd.sock" },
        { "listen_mode", "600" },
        { "reuse_port", "on" },
    };
    static const struct config_override bad[][1] = {
        { { "listen", "unix:relative.sock" } },
        { { "listen", "unix:" } },
        { { "listen", "unix:/run/fanoutd/" } },
        { { "listen", "unix:/run/fan\toutd.sock" } },
        { { "listen",
            "unix:/a/very/long/path/that/goes/on/and/on/and/on/past/the/one/hundred/"
            "and/eight/bytes/of/sun_path/in/struct/sockaddr_un.sock" } },
        { { "listen_mode", "0800" } },
        { { "listen_mode", "01777" } },
        { { "listen_mode", "rw-rw----" } },
        { { "listen_mode", "" } },
        { { "listen_mode", "-1" } },
        { { "reuse_port", "maybe" } },
        { { "reuse_port", "" } },
    };
    struct config *cfg = NULL;
    struct fo_msg msg = { "" };

    CHECK(config_build(NULL, good, FO_ARRAY_LEN(good), &cfg, &msg) == FO_OK);
    if (cfg != NULL) {
        const struct sockaddr_un *un = (const struct sockaddr_un *)&cfg->listen_addr;
        CHECK_EQ_INT(cfg->listen_addr.ss_family, AF_UNIX);
        CHECK_STR(un->sun_path, "/run/fanoutd/fanoutd.sock");
        CHECK_EQ_INT(cfg->listen_len,
                     offsetof(struct sockaddr_un, sun_path) + strlen(un->sun_path) + 1);
        CHECK_EQ_INT(cfg->listen_mode, 0600);
        CHECK_EQ_INT(cfg->reuse_port, 1);
        char *text = dump_text(cfg);
        CHECK(text != NULL && has_line(text, "listen = unix:/run/fanoutd/fanoutd.sock"));
        CHECK(text != NULL && has_line(text, "listen_mode = 0600"));
        CHECK(text != NULL && has_line(text, "reuse_port = on"));
        free(text);
        config_unref(cfg);
    }
    for (size_t i = 0; i < FO_ARRAY_LEN(bad); i++) {
        cfg = NULL;
        msg.text[0] = '\0';
        CHECK_CASE(config_build(NULL, bad[i], 1, &cfg, &msg) == FO_EINVAL, bad[i][0].value);
        CHECK_CASE(cfg == NULL && msg.text[0] != '\0', bad[i][0].value);
    }
}

static void test_key_for_flag(void)
{
    CHECK_STR(config_key_for_flag("max-batch"), "max_batch");
    CHECK_STR(config_key_for_flag("listen"), "listen");
    CHECK_STR(config_key_for_flag("log-level"), "log_level");
    CHECK_STR(config_key_for_flag("nope"), NULL);
    CHECK_STR(config_key_for_flag(""), NULL);
    CHECK_STR(config_key_for_flag("max-batchx"), NULL);
    CHECK_STR(config_key_for_flag("config"), NULL);
    /* Every key of the table has its flag (underscores become dashes). */
    for (size_t i = 0; i < FO_ARRAY_LEN(default_lines); i++) {
        char key[64], flag[64];
        size_t n = strcspn(default_lines[i], " ");
        (void)snprintf(key, sizeof(key), "%.*s", (int)n, default_lines[i]);
        for (size_t j = 0; j <= n; j++)
            flag[j] = key[j] == '_' ? '-' : key[j];
        CHECK_STR(config_key_for_flag(flag), key);
    }
}

/* Reads a whole file into a malloc'd buffer. */
static char *read_all(FILE *f, size_t *len)
{
    char *data = NULL;
    size_t n = 0, cap = 0, got;

    do {
        if (n + 4096 > cap) {
            char *p = realloc(data, cap = n + 8192);
            if (p == NULL) {
                free(data);
                return NULL;
            }
            data = p;
        }
        got = fread(data + n, 1, cap - n, f);
        n += got;
    } while (got > 0);
    *len = n;
    return data;
}

static void test_sample_file_is_current(void)
{
    FILE *tmp = tmpfile(), *file = fopen(SAMPLE_PATH, "rb");
    char *want = NULL, *got = NULL;
    size_t wlen = 0, glen = 0;

    CHECK(file != NULL);
    CHECK(tmp != NULL);
    if (file != NULL && tmp != NULL) {
        config_print_sample(tmp);
        rewind(tmp);
        got = read_all(tmp, &glen);
        want = read_all(file, &wlen);
        CHECK(got != NULL && want != NULL);
        CHECK(glen > 0);
        if (got != NULL && want != NULL && (glen != wlen || memcmp(got, want, glen) != 0))
            CHECK_FAIL_(SAMPLE_PATH " differs from config_print_sample (run make sample-config)");
    }
    free(got);
    free(want);
    if (tmp != NULL)
        fclose(tmp);
    if (file != NULL)
        fclose(file);
}

static void test_sample_file_gives_defaults(void)
{
    struct config *def = NULL, *cfg = NULL;
    struct fo_msg msg = { "" };
    char *a = NULL, *b = NULL;

    CHECK_EQ_INT(config_build(NULL, NULL, 0, &def, &msg), FO_OK);
    if (config_build(SAMPLE_PATH, NULL, 0, &cfg, &msg) != FO_OK)
        CHECK_FAIL_("config_build(" SAMPLE_PATH "): %s", msg.text);
    if (def != NULL && cfg != NULL) {
        a = dump_text(def);
        b = dump_text(cfg);
        CHECK(a != NULL && b != NULL && strcmp(a, b) == 0);
    }
    free(a);
    free(b);
    config_unref(def);
    config_unref(cfg);
}

static void test_refcount(void)
{
    struct config *cfg = NULL;
    struct fo_msg msg;

    CHECK_EQ_INT(config_build(NULL, NULL, 0, &cfg, &msg), FO_OK);
    if (cfg == NULL)
        return;
    CHECK(config_ref(cfg) == cfg);
    CHECK_EQ_INT(atomic_load(&cfg->refs), 2);
    config_unref(cfg);
    CHECK_EQ_INT(atomic_load(&cfg->refs), 1);
    config_unref(cfg);
}

static const struct unit_test tests[] = {
    { "defaults_dump", test_defaults_dump },
    { "file_values", test_file_values },
    { "empty_lists", test_empty_lists },
    { "file_errors_name_line", test_file_errors_name_line },
    { "missing_file", test_missing_file },
    { "overrides", test_overrides },
    { "listen_forms", test_listen_forms },
    { "listen_unix_mode_reuse", test_listen_unix_mode_reuse },
    { "key_for_flag", test_key_for_flag },
    { "sample_file_is_current", test_sample_file_is_current },
    { "sample_file_gives_defaults", test_sample_file_gives_defaults },
    { "refcount", test_refcount },
};

UNIT_SUITE(config_suite, "config", tests);
