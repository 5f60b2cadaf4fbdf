/*
 * config.c - the configuration table, the file parser and the printers.
 *
 * Data flow: config_build() starts from the table's defaults (parsed by the
 * same setters as user input, so a default can never be invalid in a way
 * the parser would refuse), applies the file line by line, then the
 * command-line overrides. Each setter validates fully and only then
 * replaces the old value, so a failed line leaves nothing half-set.
 */
#include "config.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netdb.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "log.h"
#include "url.h"

enum ctype {
    CT_NUM,
    CT_LISTEN,
    CT_CIDRS,
    CT_DENY,
    CT_HEADERS,
    CT_STRING,
    CT_TOKEN,
    CT_CDNID,
    CT_LOGLEVEL,
    CT_MODE,
    CT_BOOL,
    CT_INJECT
};

struct config_key {
    const char *name;
    enum ctype type;
    size_t offset;
    const char *def;
    long min, max; /* CT_NUM and CT_MODE bounds */
    const char *help;
};

/* share: a key that may be given many times, each adding a value (an empty
 * value clears what earlier lines gave): inject_header. */
#define KEY_REPEATS(k) ((k)->type == CT_INJECT)

#define OFF(field) offsetof(struct config, field)
#define DAY_MS     86400000L
#define GIB        1073741824L

static const struct config_key keys[] = {
    { "listen", CT_LISTEN, OFF(listen), "127.0.0.1:8080", 0, 0,
      "address:port to bind (IPv6 as [::1]:8080), or unix:/path/to/socket; "
      "needs a restart to change" },
    { "workers", CT_NUM, OFF(workers), "64", 1, 4096,
      "threads doing blocking upstream fetches; needs a restart to change" },
    { "queue_capacity", CT_NUM, OFF(queue_capacity), "10000", 1, 10000000,
      "items waiting for a worker, over all batches; beyond: 503 overloaded" },
    { "max_batch", CT_NUM, OFF(max_batch), "1000", 1, 1000000, "items per batch; beyond: 413" },
    { "max_body_bytes", CT_NUM, OFF(max_body_bytes), "1048576", 1, GIB,
      "request body cap in bytes; beyond: 413" },
    { "max_response_bytes", CT_NUM, OFF(max_response_bytes), "8388608", 1, GIB,
      "per item upstream body cap in bytes (decoded); beyond: item error too_large" },
    { "max_answer_bytes", CT_NUM, OFF(max_answer_bytes), "67108864", 1, 64 * GIB,
      "bodies held for one answer, all items together, counted as written in the answer "
      "(after JSON escaping or base64); an item that would pass it: too_large" },
    { "default_timeout_ms", CT_NUM, OFF(default_timeout_ms), "10000", 1, DAY_MS,
      "per item timeout when the item gives none" },
    { "max_timeout_ms", CT_NUM, OFF(max_timeout_ms), "60000", 1, DAY_MS,
      "cap on any item or batch timeout (larger ones are lowered to it)" },
    { "batch_timeout_ms", CT_NUM, OFF(batch_timeout_ms), "30000", 1, DAY_MS,
      "batch deadline when the batch gives none" },
    { "max_redirects", CT_NUM, OFF(max_redirects), "5", 0, 50,
      "redirects followed per item (0: none; the 3xx is then the item's response)" },
    { "allow", CT_CIDRS, OFF(allow), "", 0, 0, "CIDRs always allowed, overriding deny" },
    { "deny", CT_DENY, OFF(deny), POLICY_DEFAULT_DENY, 0, 0,
      "CIDRs never fetched; added to the built-in defaults shown here" },
    { "forward_headers", CT_HEADERS, OFF(forward_headers), "", 0, 0,
      "client request headers copied to every upstream request (never hop-by-hop or framing "
      "ones: Connection, Content-Length, Host, TE, ...)" },
    { "auth_token", CT_TOKEN, OFF(auth_token), "", 0, 0,
      "when set, POST /batch needs 'Authorization: Bearer TOKEN'; @/path/file reads "
      "TOKEN from that file (a regular file; at start and on reload; a trailing newline is "
      "dropped)" },
    { "per_host_limit", CT_NUM, OFF(per_host_limit), "0", 0, 100000,
      "most concurrent fetches to one host:port (0: off)" },
    { "shutdown_grace_ms", CT_NUM, OFF(shutdown_grace_ms), "10000", 0, DAY_MS,
      "how long SIGTERM waits for in-flight batches" },
    { "max_connections", CT_NUM, OFF(max_connections), "1024", 1, 1000000,
      "client connections held at once; beyond, new connections are closed at once" },
    { "client_timeout_ms", CT_NUM, OFF(client_timeout_ms), "30000", 0, DAY_MS,
      "an idle client connection is closed after this, in whole seconds rounded up, and a "
      "request must arrive whole within it of its first byte (0: never)" },
    { "log_level", CT_LOGLEVEL, OFF(log_level), "info", 0, 0, "error, warn, info or debug" },
    { "loop_token", CT_CDNID, OFF(loop_token), "fanoutd", 0, 0,
      "this deployment's token in CDN-Loop (RFC 8586); a batch naming it is refused 508" },
    { "listen_mode", CT_MODE, OFF(listen_mode), "0660", 0, 0777,
      "permissions (octal) of the socket file when listen is unix:/path; needs a restart" },
    { "reuse_port", CT_BOOL, OFF(reuse_port), "off", 0, 0,
      "on: SO_REUSEPORT, several processes share the TCP listen address; needs a restart" },
    /* share: coalescing, cache, injected headers, sensitive_headers */
    { "coalesce", CT_BOOL, OFF(coalesce), "off", 0, 0,
      "on: an identical GET or HEAD without a body already being fetched (in any batch) "
      "waits for that fetch and gets a copy of its result" },
    { "cache_ttl_ms", CT_NUM, OFF(cache_ttl_ms), "0", 0, DAY_MS,
      "how long a 200 answer to a GET is kept and answered from memory (0: no cache); "
      "Cache-Control no-store, no-cache, private or a Set-Cookie: not kept; s-maxage=N, "
      "else max-age=N, shortens it" },
    { "cache_max_bytes", CT_NUM, OFF(cache_max_bytes), "67108864", 0, 64 * GIB,
      "total bytes the cache holds (bodies as written in answers, plus URL and type); "
      "the least recently used answers leave first" },
    { "inject_header", CT_INJECT, OFF(inject), "", 0, 0,
      "PREFIX NAME: VALUE (repeatable): a fetch whose URL starts with PREFIX gets that "
      "header, replacing the item's or a forwarded one; VALUE @/path/file reads it from "
      "the file (at start and on reload); never printed" },
    { "sensitive_headers", CT_HEADERS, OFF(sensitive_headers), "", 0, 0,
      "more header names not sent on a redirect to another origin (as Authorization, "
      "Cookie and Proxy-Authorization are)" },
    /* Retries, circuit breaker, rate. */
    { "retries", CT_NUM, OFF(retries), "0", 0, 100,
      "retries per item when neither the item nor defaults give retry (at most max_retries)" },
    { "max_retries", CT_NUM, OFF(max_retries), "5", 0, 100,
      "most retries an item may ask for (retry.max above it: 400)" },
    { "retry_backoff_ms", CT_NUM, OFF(retry_backoff_ms), "100", 0, DAY_MS,
      "base of the exponential backoff: the wait before retry k is random in "
      "[0, base * 2^(k-1)]" },
    { "retry_backoff_max_ms", CT_NUM, OFF(retry_backoff_max_ms), "5000", 0, DAY_MS,
      "cap on one backoff wait (a Retry-After answer is not capped)" },
    { "breaker_failures", CT_NUM, OFF(breaker_failures), "0", 0, 1000000,
      "consecutive failed fetches to one host:port that open its circuit breaker (0: off)" },
    { "breaker_open_ms", CT_NUM, OFF(breaker_open_ms), "30000", 1, DAY_MS,
      "how long an open breaker refuses items (circuit_open) before one trial" },
    { "per_host_rate", CT_NUM, OFF(per_host_rate), "0", 0, 1000000,
      "requests per second per host:port, bursts up to one second's worth (0: off)" },
    /* streaming (NDJSON answers) */
    { "stream_heartbeat_ms", CT_NUM, OFF(stream_heartbeat_ms), "10000", 0, DAY_MS,
      "in an NDJSON stream, a heartbeat line after this long with nothing written (0: none)" },
};

#define FIELD(cfg, k, type) ((type *)(void *)((char *)(cfg) + (k)->offset))

static const struct config_key *find_key(const char *name)
{
    for (size_t i = 0; i < FO_ARRAY_LEN(keys); i++) {
        if (strcmp(keys[i].name, name) == 0)
            return &keys[i];
    }
    return NULL;
}

const char *config_key_for_flag(const char *flag)
{
    char name[64];
    size_t i;

    for (i = 0; flag[i] != '\0' && i < sizeof(name) - 1; i++)
        name[i] = flag[i] == '-' ? '_' : flag[i];
    name[i] = '\0';
    if (flag[i] != '\0' || strchr(flag, '_') != NULL)
        return NULL;
    const struct config_key *k = find_key(name);
    return k ? k->name : NULL;
}

/* ---- value parsers ---------------------------------------------------- */

static fo_err parse_num(const char *s, long min, long max, long *out, struct fo_msg *msg)
{
    char *end;
    long long v;

    errno = 0;
    if (*s == '\0' || !(isdigit((unsigned char)*s) || *s == '-' || *s == '+')) {
        fo_msg_set(msg, "'%s' is not a whole number", s);
        return FO_EINVAL;
    }
    v = strtoll(s, &end, 10);
    if (*end != '\0') {
        fo_msg_set(msg, "'%s' is not a whole number", s);
        return FO_EINVAL;
    }
    if (errno == ERANGE || v < min || v > max) {
        fo_msg_set(msg, "%s is out of range (%ld to %ld)", s, min, max);
        return FO_EINVAL;
    }
    *out = (long)v;
    return FO_OK;
}

/* "unix:" already cut off: an absolute path that fits sun_path. */
static fo_err parse_unix(const char *path, struct sockaddr_storage *ss, socklen_t *len,
                         struct fo_msg *msg)
{
    struct sockaddr_un *un = (struct sockaddr_un *)ss;
    size_t n = strlen(path);

    if (path[0] != '/') {
        fo_msg_set(msg, "'unix:%s': the socket path must be absolute", path);
        return FO_EINVAL;
    }
    if (n >= sizeof(un->sun_path)) {
        fo_msg_set(msg, "'unix:%s': the socket path is longer than %zu bytes", path,
                   sizeof(un->sun_path) - 1);
        return FO_EINVAL;
    }
    if (path[n - 1] == '/') {
        fo_msg_set(msg, "'unix:%s': the socket path names a directory", path);
        return FO_EINVAL;
    }
    for (const char *p = path; *p; p++) {
        if (iscntrl((unsigned char)*p)) {
            fo_msg_set(msg, "the socket path must not contain control characters");
            return FO_EINVAL;
        }
    }
    memset(ss, 0, sizeof(*ss));
    un->sun_family = AF_UNIX;
    memcpy(un->sun_path, path, n + 1);
    *len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n + 1);
    return FO_OK;
}

fo_err config_parse_listen(const char *text, struct sockaddr_storage *ss, socklen_t *len,
                           struct fo_msg *msg)
{
    char host[256];
    const char *colon, *hstart = text;
    size_t hlen;
    long port;
    struct addrinfo hints, *res = NULL;
    int rc;

    if (strncmp(text, FO_UNIX_PREFIX, strlen(FO_UNIX_PREFIX)) == 0)
        return parse_unix(text + strlen(FO_UNIX_PREFIX), ss, len, msg);
    if (text[0] == '[') {
        const char *close = strchr(text, ']');
        if (close == NULL || close[1] != ':') {
            fo_msg_set(msg, "'%s' is not [IPv6]:port", text);
            return FO_EINVAL;
        }
        hstart = text + 1;
        hlen = (size_t)(close - hstart);
        colon = close + 1;
    } else {
        colon = strrchr(text, ':');
        if (colon == NULL || strchr(text, ':') != colon) {
            fo_msg_set(msg, "'%s' is not address:port", text);
            return FO_EINVAL;
        }
        hlen = (size_t)(colon - text);
    }
    if (hlen == 0 || hlen >= sizeof(host)) {
        fo_msg_set(msg, "'%s' has no address before the port", text);
        return FO_EINVAL;
    }
    memcpy(host, hstart, hlen);
    host[hlen] = '\0';
    if (parse_num(colon + 1, 1, 65535, &port, NULL) != FO_OK) {
        fo_msg_set(msg, "'%s' has no valid port (1-65535)", text);
        return FO_EINVAL;
    }
    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
    char portstr[8];
    (void)snprintf(portstr, sizeof(portstr), "%ld", port);
    rc = getaddrinfo(host, portstr, &hints, &res);
    if (rc != 0 || res == NULL) {
        fo_msg_set(msg, "cannot resolve listen address '%s': %s", host, gai_strerror(rc));
        return FO_EINVAL;
    }
    memcpy(ss, res->ai_addr, res->ai_addrlen);
    *len = res->ai_addrlen;
    freeaddrinfo(res);
    return FO_OK;
}

static void str_list_free(struct str_list *l)
{
    for (size_t i = 0; i < l->n; i++)
        free(l->v[i]);
    FO_FREE(l->v);
    l->n = 0;
}

/* Splits "a, b ,c" and calls fn on each trimmed non-empty element. */
static fo_err split_list(const char *value,
                         fo_err (*fn)(const char *item, void *ctx, struct fo_msg *msg), void *ctx,
                         struct fo_msg *msg)
{
    char *copy = strdup(value), *save = NULL, *tok;
    fo_err err = FO_OK;

    if (copy == NULL)
        return FO_ENOMEM;
    for (tok = strtok_r(copy, ",", &save); tok != NULL; tok = strtok_r(NULL, ",", &save)) {
        while (isspace((unsigned char)*tok))
            tok++;
        size_t n = strlen(tok);
        while (n > 0 && isspace((unsigned char)tok[n - 1]))
            tok[--n] = '\0';
        if (n == 0)
            continue;
        if ((err = fn(tok, ctx, msg)) != FO_OK)
            break;
    }
    free(copy);
    return err;
}

static fo_err add_cidr(const char *item, void *ctx, struct fo_msg *msg)
{
    struct cidr c;
    fo_err err = cidr_parse(item, &c, msg);

    if (err != FO_OK)
        return err;
    err = cidr_list_add(ctx, &c);
    if (err == FO_ETOOBIG)
        fo_msg_set(msg, "more than %d entries", FO_MAX_LIST_ITEMS);
    return err;
}

static int is_token_char(unsigned char c)
{
    return isalnum(c) || (c != '\0' && strchr("!#$%&'*+-.^_`|~", c) != NULL);
}

static fo_err add_header(const char *item, void *ctx, struct fo_msg *msg)
{
    struct str_list *l = ctx;
    char **v, *copy;

    for (const char *p = item; *p; p++) {
        if (!is_token_char((unsigned char)*p)) {
            fo_msg_set(msg, "'%s' is not a header name", item);
            return FO_EINVAL;
        }
    }
    if (fo_header_not_forwardable(item)) {
        fo_msg_set(msg,
                   "'%s' is a hop-by-hop or framing header (RFC 9110 7.6.1) and is "
                   "never forwarded",
                   item);
        return FO_EINVAL;
    }
    if (l->n >= FO_MAX_LIST_ITEMS) {
        fo_msg_set(msg, "more than %d entries", FO_MAX_LIST_ITEMS);
        return FO_ETOOBIG;
    }
    if ((copy = strdup(item)) == NULL)
        return FO_ENOMEM;
    if ((v = realloc(l->v, (l->n + 1) * sizeof(*v))) == NULL) {
        free(copy);
        return FO_ENOMEM;
    }
    v[l->n++] = copy;
    l->v = v;
    return FO_OK;
}

static fo_err set_cidrs(struct cidr_list *dst, const char *base, const char *value,
                        struct fo_msg *msg)
{
    struct cidr_list l = { 0 };
    fo_err err = FO_OK;

    if (base != NULL)
        err = split_list(base, add_cidr, &l, msg);
    if (err == FO_OK)
        err = split_list(value, add_cidr, &l, msg);
    if (err != FO_OK) {
        cidr_list_free(&l);
        return err;
    }
    cidr_list_free(dst);
    *dst = l;
    return FO_OK;
}

/* 1 if value, or one element of it as a list, starts with '#': it would
 * read back from a printed configuration as a comment. */
static int starts_hash(const char *value)
{
    for (const char *p = value; *p; p++) {
        if (*p == '#' && (p == value || p[-1] == ',' || isspace((unsigned char)p[-1])))
            return 1;
    }
    return 0;
}

static int token_text_ok(const char *p)
{
    for (; *p; p++) {
        if (isspace((unsigned char)*p) || iscntrl((unsigned char)*p))
            return 0;
    }
    return 1;
}

/*
 * Reads a secret from the file at path into text (size bytes; at most
 * size - 2 of them): one trailing newline (LF or CRLF) dropped. what names
 * the setting in messages ("token", "inject_header"). An unreadable, not
 * regular, too long or empty file is an error naming it (empty: a truncated
 * file must not turn a secret off). The caller checks the text's characters.
 */
static fo_err read_secret_file(const char *path, const char *what, char *text, size_t size,
                               struct fo_msg *msg)
{
    /* O_NONBLOCK: opening a FIFO must not wait for a writer (it would hang
     * start-up, a reload and so SIGTERM); only a regular file is read. */
    int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC | O_NOCTTY);
    struct stat st;
    FILE *f;
    size_t n;
    fo_err err = FO_OK;

    if (fd < 0) {
        fo_msg_set(msg, "cannot read the %s file '%s': %s", what, path, strerror(errno));
        return FO_EINVAL;
    }
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        fo_msg_set(msg, "the %s file '%s' is not a regular file", what, path);
        close(fd);
        return FO_EINVAL;
    }
    if ((f = fdopen(fd, "r")) == NULL) {
        fo_msg_set(msg, "cannot read the %s file '%s': %s", what, path, strerror(errno));
        close(fd);
        return FO_EINVAL;
    }
    n = fread(text, 1, size - 1, f);
    text[n] = '\0';
    if (ferror(f)) {
        fo_msg_set(msg, "cannot read the %s file '%s'", what, path);
        err = FO_EINVAL;
    } else if (n == size - 1 && fgetc(f) != EOF) {
        fo_msg_set(msg, "the %s file '%s' is longer than %zu bytes", what, path, size - 2);
        err = FO_EINVAL;
    }
    fclose(f);
    if (err != FO_OK)
        return err;
    if (n > 0 && text[n - 1] == '\n')
        text[--n] = '\0';
    if (n > 0 && text[n - 1] == '\r')
        text[--n] = '\0';
    if (n == 0) {
        fo_msg_set(msg, "the %s file '%s' is empty", what, path);
        return FO_EINVAL;
    }
    if (strlen(text) != n) {
        fo_msg_set(msg, "the %s file '%s' holds a NUL", what, path);
        return FO_EINVAL;
    }
    return FO_OK;
}

/* The token from path: a secret file whose text has no space or control character. */
static fo_err read_token_file(const char *path, char *text, size_t size, struct fo_msg *msg)
{
    fo_err err = read_secret_file(path, "token", text, size, msg);

    if (err == FO_OK && !token_text_ok(text)) {
        fo_msg_set(msg, "the token in '%s' must not contain spaces, control characters or NUL",
                   path);
        return FO_EINVAL;
    }
    return err;
}

/* What --check-config prints in place of a secret given in the file or on
 * the command line: loading it back is refused, never taken for the secret. */
#define SECRET_MASK_WHY                                                               \
    "'" FO_SECRET_MASK                                                                \
    "' is what --check-config prints in place of a secret, not a secret: "            \
    "give the value itself, or @/path to a file that holds it (which --check-config " \
    "prints as such)"

/* auth_token: the token itself, or "@/path" naming the file that holds it
 * (read each time the configuration is built, so also on reload). */
static fo_err set_token(struct config *cfg, const char *value, struct fo_msg *msg)
{
    char text[FO_MAX_TOKEN_FILE + 2];
    const char *token = value;
    char *copy = NULL, *src = NULL;
    fo_err err = FO_OK;

    if (strcmp(value, FO_SECRET_MASK) == 0) {
        fo_msg_set(msg, SECRET_MASK_WHY);
        err = FO_EINVAL;
        goto out;
    }
    if (value[0] == '@') {
        if ((err = read_token_file(value + 1, text, sizeof(text), msg)) != FO_OK)
            goto out;
        token = text;
        if ((src = strdup(value)) == NULL) {
            err = FO_ENOMEM;
            goto out;
        }
    } else if (!token_text_ok(value)) {
        fo_msg_set(msg, "the value must not contain spaces or control characters");
        err = FO_EINVAL;
        goto out;
    }
    if ((copy = strdup(token)) == NULL) {
        err = FO_ENOMEM;
        goto out;
    }
    free(cfg->auth_token);
    free(cfg->auth_token_src);
    cfg->auth_token = copy;
    cfg->auth_token_src = src;
    src = NULL;
out:
    free(src);
    explicit_bzero(text, sizeof(text));
    return err;
}

/* Permission bits in octal ("0660", "660"); nothing else (no symbolic modes). */
static fo_err parse_mode(const char *s, long max, long *out, struct fo_msg *msg)
{
    char *end;
    long v;

    errno = 0;
    if (*s == '\0' || strspn(s, "01234567") != strlen(s)) {
        fo_msg_set(msg, "'%s' is not an octal mode such as 0660", s);
        return FO_EINVAL;
    }
    v = strtol(s, &end, 8);
    if (errno == ERANGE || *end != '\0' || v > max) {
        fo_msg_set(msg, "%s is out of range (0 to %04lo)", s, (unsigned long)max);
        return FO_EINVAL;
    }
    *out = v;
    return FO_OK;
}

static fo_err parse_bool(const char *s, long *out, struct fo_msg *msg)
{
    static const char *const yes[] = { "on", "yes", "true", "1" };
    static const char *const no[] = { "off", "no", "false", "0" };

    for (size_t i = 0; i < FO_ARRAY_LEN(yes); i++) {
        if (strcasecmp(s, yes[i]) == 0 || strcasecmp(s, no[i]) == 0) {
            *out = strcasecmp(s, yes[i]) == 0;
            return FO_OK;
        }
    }
    fo_msg_set(msg, "'%s' is not on or off", s);
    return FO_EINVAL;
}

/* ---- share: inject_header ------------------------------------------- */

static void inject_rule_free(struct inject_rule *r)
{
    free(r->origin);
    free(r->path);
    free(r->name);
    if (r->line != NULL)
        explicit_bzero(r->line, strlen(r->line));
    free(r->line);
    free(r->prefix);
    free(r->src);
}

static void inject_free(struct config *cfg)
{
    for (size_t i = 0; i < cfg->ninject; i++)
        inject_rule_free(&cfg->inject[i]);
    FO_FREE(cfg->inject);
    cfg->ninject = 0;
}

/* "PREFIX NAME: VALUE" or "PREFIX NAME: @/path": one more rule (an empty
 * value clears the list). The rule replaces an earlier one of the same
 * prefix and name. */
static fo_err set_inject(struct config *cfg, const char *value, struct fo_msg *msg)
{
    char text[FO_MAX_TOKEN_FILE + 2];
    struct inject_rule r = { 0 }, *v;
    const char *sp, *name, *colon, *val;
    fo_err err = FO_EINVAL;

    if (*value == '\0') {
        inject_free(cfg);
        return FO_OK;
    }
    sp = value + strcspn(value, " \t");
    name = sp + strspn(sp, " \t");
    colon = strchr(name, ':');
    if (*sp == '\0' || colon == NULL || colon == name) {
        fo_msg_set(msg, "expected 'PREFIX NAME: VALUE'");
        goto out;
    }
    for (const char *c = name; c < colon; c++) {
        if (!is_token_char((unsigned char)*c)) {
            fo_msg_set(msg, "'%.*s' is not a header name", (int)(colon - name), name);
            goto out;
        }
    }
    val = colon + 1 + strspn(colon + 1, " \t");
    for (const char *c = val; *c; c++) {
        if (iscntrl((unsigned char)*c) && *c != '\t') {
            fo_msg_set(msg, "the value must not contain control characters");
            goto out;
        }
    }
    if (*val == '\0') {
        fo_msg_set(msg, "the header value is empty");
        goto out;
    }
    if (strcmp(val, FO_SECRET_MASK) == 0) {
        fo_msg_set(msg, SECRET_MASK_WHY);
        goto out;
    }
    if ((r.prefix = strndup(value, (size_t)(sp - value))) == NULL ||
        (r.name = strndup(name, (size_t)(colon - name))) == NULL) {
        err = FO_ENOMEM;
        goto out;
    }
    if ((err = url_prefix(r.prefix, &r.origin, &r.path, msg)) != FO_OK)
        goto out;
    if (*val == '@') {
        if ((err = read_secret_file(val + 1, "inject_header", text, sizeof(text), msg)) != FO_OK)
            goto out;
        for (const char *c = text; *c; c++) {
            if (iscntrl((unsigned char)*c) && *c != '\t') {
                /* The same rule as a value written inline; never the value itself. */
                fo_msg_set(msg, "the value in '%.200s' must not contain control characters",
                           val + 1);
                err = FO_EINVAL;
                goto out;
            }
        }
        if ((r.src = strdup(val)) == NULL) {
            err = FO_ENOMEM;
            goto out;
        }
        val = text;
    }
    size_t n = strlen(r.name) + strlen(val) + 3;
    if ((r.line = malloc(n)) == NULL) {
        err = FO_ENOMEM;
        goto out;
    }
    (void)snprintf(r.line, n, "%s: %s", r.name, val);
    for (size_t i = 0; i < cfg->ninject; i++) {
        struct inject_rule *o = &cfg->inject[i];
        if (strcmp(o->origin, r.origin) == 0 && strcmp(o->path, r.path) == 0 &&
            strcasecmp(o->name, r.name) == 0) {
            inject_rule_free(o);
            *o = r;
            memset(&r, 0, sizeof(r));
            err = FO_OK;
            goto out;
        }
    }
    if (cfg->ninject >= FO_MAX_LIST_ITEMS) {
        fo_msg_set(msg, "more than %d inject_header rules", FO_MAX_LIST_ITEMS);
        err = FO_ETOOBIG;
        goto out;
    }
    if ((v = realloc(cfg->inject, (cfg->ninject + 1) * sizeof(*v))) == NULL) {
        err = FO_ENOMEM;
        goto out;
    }
    cfg->inject = v;
    cfg->inject[cfg->ninject++] = r;
    memset(&r, 0, sizeof(r));
    err = FO_OK;
out:
    inject_rule_free(&r);
    explicit_bzero(text, sizeof(text));
    return err;
}

const struct inject_rule *config_inject_match(const struct inject_rule *rules, size_t n,
                                              const char *origin, const char *path)
{
    const struct inject_rule *best = NULL;
    size_t best_len = 0;

    for (size_t i = 0; i < n; i++) {
        size_t len = strlen(rules[i].path);
        if (strcmp(rules[i].origin, origin) == 0 && strncmp(path, rules[i].path, len) == 0 &&
            (best == NULL || len > best_len)) {
            best = &rules[i];
            best_len = len;
        }
    }
    return best;
}

/* Sets one key from its text form; the old value stays on error. */
static fo_err config_set(struct config *cfg, const struct config_key *k, const char *value,
                         struct fo_msg *msg)
{
    fo_err err;

    if (starts_hash(value)) {
        fo_msg_set(msg, "a value (or list element) cannot start with '#'");
        return FO_EINVAL;
    }

    switch (k->type) {
    case CT_NUM:
        return parse_num(value, k->min, k->max, FIELD(cfg, k, long), msg);
    case CT_LISTEN: {
        char *copy;
        if ((err = config_parse_listen(value, &cfg->listen_addr, &cfg->listen_len, msg)) != FO_OK)
            return err;
        if ((copy = strdup(value)) == NULL)
            return FO_ENOMEM;
        free(cfg->listen);
        cfg->listen = copy;
        return FO_OK;
    }
    case CT_CIDRS:
        return set_cidrs(FIELD(cfg, k, struct cidr_list), NULL, value, msg);
    case CT_DENY:
        return set_cidrs(FIELD(cfg, k, struct cidr_list), POLICY_DEFAULT_DENY, value, msg);
    case CT_HEADERS: {
        struct str_list l = { 0 };
        if ((err = split_list(value, add_header, &l, msg)) != FO_OK) {
            str_list_free(&l);
            return err;
        }
        str_list_free(FIELD(cfg, k, struct str_list));
        *FIELD(cfg, k, struct str_list) = l;
        return FO_OK;
    }
    case CT_STRING: {
        char *copy;
        for (const char *p = value; *p; p++) {
            if (isspace((unsigned char)*p) || iscntrl((unsigned char)*p)) {
                fo_msg_set(msg, "the value must not contain spaces or control characters");
                return FO_EINVAL;
            }
        }
        if ((copy = strdup(value)) == NULL)
            return FO_ENOMEM;
        free(*FIELD(cfg, k, char *));
        *FIELD(cfg, k, char *) = copy;
        return FO_OK;
    }
    case CT_CDNID: {
        /* RFC 8586 cdn-id: a token, or host[:port] (token characters and ':') */
        char *copy;
        for (const char *p = value; *p; p++) {
            if (!is_token_char((unsigned char)*p) && *p != ':') {
                fo_msg_set(msg, "'%s' is not a CDN-Loop token (letters, digits, -._~:... only)",
                           value);
                return FO_EINVAL;
            }
        }
        if (value[0] == '\0') {
            fo_msg_set(msg, "the token must not be empty");
            return FO_EINVAL;
        }
        if ((copy = strdup(value)) == NULL)
            return FO_ENOMEM;
        free(*FIELD(cfg, k, char *));
        *FIELD(cfg, k, char *) = copy;
        return FO_OK;
    }
    case CT_TOKEN:
        return set_token(cfg, value, msg);
    case CT_MODE:
        return parse_mode(value, k->max, FIELD(cfg, k, long), msg);
    case CT_BOOL:
        return parse_bool(value, FIELD(cfg, k, long), msg);
    case CT_INJECT:
        return set_inject(cfg, value, msg);
    case CT_LOGLEVEL: {
        int lvl = log_level_parse(value);
        if (lvl < 0) {
            fo_msg_set(msg, "'%s' is not a log level (error, warn, info, debug)", value);
            return FO_EINVAL;
        }
        *FIELD(cfg, k, long) = lvl;
        return FO_OK;
    }
    }
    return FO_EINVAL;
}

/* ---- lifetime --------------------------------------------------------- */

static void config_free(struct config *cfg)
{
    if (cfg == NULL)
        return;
    free(cfg->listen);
    cidr_list_free(&cfg->allow);
    cidr_list_free(&cfg->deny);
    str_list_free(&cfg->forward_headers);
    free(cfg->auth_token);
    free(cfg->loop_token);
    free(cfg->auth_token_src);
    inject_free(cfg);
    str_list_free(&cfg->sensitive_headers);
    free(cfg);
}

struct config *config_ref(struct config *cfg)
{
    atomic_fetch_add(&cfg->refs, 1);
    return cfg;
}

void config_unref(struct config *cfg)
{
    if (cfg != NULL && atomic_fetch_sub(&cfg->refs, 1) == 1)
        config_free(cfg);
}

/* ---- the file --------------------------------------------------------- */

static char *trim(char *s)
{
    size_t n;

    while (isspace((unsigned char)*s))
        s++;
    n = strlen(s);
    while (n > 0 && isspace((unsigned char)s[n - 1]))
        s[--n] = '\0';
    return s;
}

/* Cuts a comment: '#' at the start or after white space ("a#b" is a value). */
static void cut_comment(char *line)
{
    for (char *p = line; *p; p++) {
        if (*p == '#' && (p == line || isspace((unsigned char)p[-1]))) {
            *p = '\0';
            return;
        }
    }
}

static fo_err load_file(struct config *cfg, const char *path, struct fo_msg *msg)
{
    char line[FO_MAX_CONFIG_LINE + 2];
    int seen_line[FO_ARRAY_LEN(keys)] = { 0 };
    struct fo_msg detail;
    FILE *f;
    int lineno = 0;
    fo_err err = FO_OK;

    f = fopen(path, "r");
    if (f == NULL) {
        fo_msg_set(msg, "%s: cannot open: %s", path, strerror(errno));
        return FO_EINVAL;
    }
    while (fgets(line, sizeof(line), f) != NULL) {
        lineno++;
        cfg->file_bytes += strlen(line);
        if (strlen(line) > FO_MAX_CONFIG_LINE) {
            fo_msg_set(msg, "%s:%d: line longer than %d bytes", path, lineno, FO_MAX_CONFIG_LINE);
            err = FO_EINVAL;
            break;
        }
        cut_comment(line);
        char *text = trim(line);
        if (*text == '\0')
            continue;
        char *eq = strchr(text, '=');
        if (eq == NULL) {
            fo_msg_set(msg, "%s:%d: expected 'key = value'", path, lineno);
            err = FO_EINVAL;
            break;
        }
        *eq = '\0';
        char *name = trim(text), *value = trim(eq + 1);
        const struct config_key *k = find_key(name);
        if (k == NULL) {
            fo_msg_set(msg, "%s:%d: unknown key '%s'", path, lineno, name);
            err = FO_EINVAL;
            break;
        }
        size_t idx = (size_t)(k - keys);
        if (seen_line[idx] != 0 && !KEY_REPEATS(k)) {
            fo_msg_set(msg, "%s:%d: key '%s' already set on line %d", path, lineno, name,
                       seen_line[idx]);
            err = FO_EINVAL;
            break;
        }
        seen_line[idx] = lineno;
        cfg->file_keys++;
        if ((err = config_set(cfg, k, value, &detail)) != FO_OK) {
            fo_msg_set(msg, "%s:%d: %s: %s", path, lineno, name,
                       err == FO_ENOMEM ? "out of memory" : detail.text);
            break;
        }
    }
    if (err == FO_OK && ferror(f)) {
        fo_msg_set(msg, "%s: read error", path);
        err = FO_EINVAL;
    }
    fclose(f);
    return err;
}

fo_err config_build(const char *path, const struct config_override *ov, size_t nov,
                    struct config **out, struct fo_msg *msg)
{
    struct config *cfg = calloc(1, sizeof(*cfg));
    struct fo_msg detail;
    fo_err err = FO_OK;

    *out = NULL;
    if (cfg == NULL)
        return FO_ENOMEM;
    atomic_init(&cfg->refs, 1);
    for (size_t i = 0; i < FO_ARRAY_LEN(keys) && err == FO_OK; i++) {
        err = config_set(cfg, &keys[i], keys[i].def, &detail);
        if (err != FO_OK)
            fo_msg_set(msg, "built-in default of %s: %s", keys[i].name, detail.text);
    }
    if (err == FO_OK && path != NULL)
        err = load_file(cfg, path, msg);
    for (size_t i = 0; i < nov && err == FO_OK; i++) {
        const struct config_key *k = find_key(ov[i].key);
        char flag[64]; /* the key as its flag is spelt: listen_mode -> listen-mode */
        size_t j;
        for (j = 0; ov[i].key[j] != '\0' && j + 1 < sizeof(flag); j++)
            flag[j] = ov[i].key[j] == '_' ? '-' : ov[i].key[j];
        flag[j] = '\0';
        if (k == NULL) {
            fo_msg_set(msg, "unknown option --%s", flag);
            err = FO_EINVAL;
        } else if ((err = config_set(cfg, k, ov[i].value, &detail)) != FO_OK) {
            fo_msg_set(msg, "--%s: %s", flag, detail.text);
        }
    }
    if (err == FO_OK && cfg->retries > cfg->max_retries) { /* retries */
        fo_msg_set(msg, "retries (%ld) is above max_retries (%ld)", cfg->retries,
                   cfg->max_retries);
        err = FO_EINVAL;
    }
    if (err != FO_OK) {
        config_free(cfg);
        return err;
    }
    *out = cfg;
    return FO_OK;
}

/* ---- printers --------------------------------------------------------- */

static void print_value(const struct config *cfg, const struct config_key *k, FILE *out)
{
    char text[64];

    switch (k->type) {
    case CT_NUM:
        fprintf(out, "%ld", *FIELD(cfg, k, const long));
        break;
    case CT_LISTEN:
        fputs(cfg->listen, out);
        break;
    case CT_CIDRS:
    case CT_DENY: {
        const struct cidr_list *l = FIELD(cfg, k, const struct cidr_list);
        for (size_t i = 0; i < l->n; i++) {
            cidr_format(&l->v[i], text, sizeof(text));
            fprintf(out, "%s%s", i ? ", " : "", text);
        }
        break;
    }
    case CT_HEADERS: {
        const struct str_list *l = FIELD(cfg, k, const struct str_list);
        for (size_t i = 0; i < l->n; i++)
            fprintf(out, "%s%s", i ? ", " : "", l->v[i]);
        break;
    }
    case CT_STRING:
    case CT_CDNID:
        fputs(*FIELD(cfg, k, char *const), out);
        break;
    case CT_TOKEN:
        /* Never the token itself: where it comes from, or that it is set. */
        if (cfg->auth_token_src != NULL)
            fputs(cfg->auth_token_src, out);
        else if (cfg->auth_token[0] != '\0')
            fputs(FO_SECRET_MASK, out);
        break;
    case CT_LOGLEVEL:
        fputs(log_level_name((enum log_level) * FIELD(cfg, k, const long)), out);
        break;
    case CT_MODE:
        fprintf(out, "%04lo", (unsigned long)*FIELD(cfg, k, const long));
        break;
    case CT_BOOL:
        fputs(*FIELD(cfg, k, const long) ? "on" : "off", out);
        break;
    case CT_INJECT:
        /* Never the value, nor where it comes from: "PREFIX NAME: ***", one
         * line per rule, as the contract has it (config_dump writes
         * "inject_header = " before each). Such a dump does not load back. */
        for (size_t i = 0; i < cfg->ninject; i++)
            fprintf(out, "%s%s %s: " FO_SECRET_MASK, i ? "\n" : "", cfg->inject[i].prefix,
                    cfg->inject[i].name);
        break;
    }
}

int config_changed(const struct config *a, const struct config *b, const char *key)
{
    const struct config_key *k = find_key(key);
    char *ta = NULL, *tb = NULL;
    size_t la = 0, lb = 0;
    int changed;

    if (k == NULL)
        return 0;
    if (k->type == CT_TOKEN)
        return strcmp(a->auth_token, b->auth_token) != 0;
    FILE *ma = open_memstream(&ta, &la), *mb = open_memstream(&tb, &lb);
    if (ma != NULL) {
        print_value(a, k, ma);
        fclose(ma);
    }
    if (mb != NULL) {
        print_value(b, k, mb);
        fclose(mb);
    }
    /* Out of memory: said to have changed, which only adds a log line. */
    changed = ta == NULL || tb == NULL || strcmp(ta, tb) != 0;
    free(ta);
    free(tb);
    return changed;
}

void config_dump(const struct config *cfg, FILE *out)
{
    for (size_t i = 0; i < FO_ARRAY_LEN(keys); i++) {
        char *text = NULL;
        size_t len = 0;
        FILE *mem = open_memstream(&text, &len);
        if (mem == NULL)
            continue;
        print_value(cfg, &keys[i], mem);
        fclose(mem);
        /* An empty value prints as "key =" (no trailing blank); a
         * repeatable key one line per value. */
        if (KEY_REPEATS(&keys[i]) && len) {
            char *save = NULL;
            for (char *v = strtok_r(text, "\n", &save); v; v = strtok_r(NULL, "\n", &save))
                fprintf(out, "%s = %s\n", keys[i].name, v);
        } else {
            fprintf(out, "%s =%s%s\n", keys[i].name, len ? " " : "", len ? text : "");
        }
        free(text);
    }
}

void config_print_help(FILE *out)
{
    for (size_t i = 0; i < FO_ARRAY_LEN(keys); i++) {
        char flag[64];
        size_t j;
        for (j = 0; keys[i].name[j] && j < sizeof(flag) - 1; j++)
            flag[j] = keys[i].name[j] == '_' ? '-' : keys[i].name[j];
        flag[j] = '\0';
        fprintf(out, "  --%-22s %s (default: %s)\n", flag, keys[i].help,
                keys[i].def[0] ? keys[i].def : "empty");
    }
}

void config_print_sample(FILE *out)
{
    fputs(
        "# fanoutd configuration: every key with its default.\n"
        "# Format: key = value; '#' starts a comment (at the start of a line or after\n"
        "# white space); lists are comma-separated; an empty value is an empty list.\n"
        "# Every key can also be given as --key-name VALUE on the command line.\n",
        out);
    for (size_t i = 0; i < FO_ARRAY_LEN(keys); i++)
        fprintf(out, "\n# %s\n%s = %s\n", keys[i].help, keys[i].name, keys[i].def);
}
