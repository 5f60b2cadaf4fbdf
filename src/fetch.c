/*
 * fetch.c - upstream fetches with libcurl (see fetch.h).
 *
 * fetch_run():  reset the worker's easy handle -> set the options for this
 *               item -> run it on the worker's private multi handle (whose
 *               connection cache keeps keep-alive connections between
 *               fetches) -> map the outcome to the contract's result:
 *               status, content type, encoded body, or an error code.
 *
 * The transfer waits in curl_multi_poll, so fetch_wake() (curl_multi_wakeup,
 * thread-safe) stops it at once when its job finishes; curl_easy_perform
 * would only notice on its next progress call, up to a second later.
 */
#include "fetch.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>

#include "buf.h"
#include "encode.h"
#include "job.h"
#include "log.h"
#include "metrics.h"

/* A body buffer bigger than this is released after the fetch, so one big
 * response does not pin memory in an idle worker. */
#define FETCH_KEEP_BUFFER (256 * 1024)

struct fetcher {
    struct fetch_env *env;
    CURLM *multi;                 /* private to this worker; holds the connection cache */
    CURL *easy;
    unsigned long generation;     /* of the config the handle's connections were made under */
    struct buf body;              /* the upstream body, reused from fetch to fetch */
    char errbuf[CURL_ERROR_SIZE];

    /* Per fetch. */
    char pin[FO_MAX_URL_LEN + 64]; /* CURLOPT_CONNECT_TO entry (fetch_pin), "" if none */
    struct job *job;              /* borrowed for the fetch */
    int blocked;                  /* POLICY_DENY or POLICY_SELF seen when connecting */
    char blocked_addr[INET6_ADDRSTRLEN];
    int too_large;
    int nomem;
    int headers_done;             /* the last response's header block is complete */
};

static void share_lock(CURL *h, curl_lock_data data, curl_lock_access access, void *ud)
{
    struct fetch_env *env = ud;
    (void)h;
    (void)access;
    pthread_mutex_lock(&env->locks[data]);
}

static void share_unlock(CURL *h, curl_lock_data data, void *ud)
{
    struct fetch_env *env = ud;
    (void)h;
    pthread_mutex_unlock(&env->locks[data]);
}

fo_err fetch_env_init(struct fetch_env *env, const struct sockaddr *listen, socklen_t len)
{
    fo_err err;

    memset(env, 0, sizeof(*env));
    for (int i = 0; i < CURL_LOCK_DATA_LAST; i++)
        pthread_mutex_init(&env->locks[i], NULL);
    if ((err = self_addr_init(&env->self, listen, len)) != FO_OK)
        return err;
    env->share = curl_share_init();
    if (env->share == NULL)
        return FO_ENOMEM;
    if (curl_share_setopt(env->share, CURLSHOPT_LOCKFUNC, share_lock) != CURLSHE_OK ||
        curl_share_setopt(env->share, CURLSHOPT_UNLOCKFUNC, share_unlock) != CURLSHE_OK ||
        curl_share_setopt(env->share, CURLSHOPT_USERDATA, env) != CURLSHE_OK ||
        curl_share_setopt(env->share, CURLSHOPT_SHARE, CURL_LOCK_DATA_DNS) != CURLSHE_OK ||
        curl_share_setopt(env->share, CURLSHOPT_SHARE, CURL_LOCK_DATA_SSL_SESSION) != CURLSHE_OK)
        return FO_EINVAL;
    return FO_OK;
}

void fetch_env_free(struct fetch_env *env)
{
    if (env->share != NULL)
        curl_share_cleanup(env->share);
    env->share = NULL;
    self_addr_free(&env->self);
    for (int i = 0; i < CURL_LOCK_DATA_LAST; i++)
        pthread_mutex_destroy(&env->locks[i]);
}

static void set_constant_options(struct fetcher *f);

/* The curl handles are made by the worker on its first fetch (fetch_prepare),
 * so an idle pool costs its threads and not also about 11 KiB of curl state
 * per worker. */
struct fetcher *fetcher_new(struct fetch_env *env)
{
    struct fetcher *f = calloc(1, sizeof(*f));

    if (f == NULL)
        return NULL;
    f->env = env;
    buf_init(&f->body, 0);
    return f;
}

void fetcher_free(struct fetcher *f)
{
    if (f == NULL)
        return;
    curl_easy_cleanup(f->easy);
    if (f->multi != NULL)
        curl_multi_cleanup(f->multi);
    buf_free(&f->body);
    free(f);
}

void fetch_wake(struct fetcher *f)
{
    if (f->multi != NULL)
        (void)curl_multi_wakeup(f->multi);
}

/* ---- callbacks ---------------------------------------------------------- */

static size_t on_body(char *data, size_t size, size_t nmemb, void *ud)
{
    struct fetcher *f = ud;
    size_t len = size * nmemb;
    fo_err err = buf_append(&f->body, data, len);

    if (err == FO_OK)
        return len;
    if (err == FO_ETOOBIG)
        f->too_large = 1;
    else
        f->nomem = 1;
    return 0;   /* stops the transfer */
}

/* Tracks whether the current response's headers are complete: a status
 * line starts a block, the empty line ends it (1xx and redirects repeat). */
static size_t on_header(char *line, size_t size, size_t nitems, void *ud)
{
    struct fetcher *f = ud;
    size_t len = size * nitems;

    if (len >= 5 && memcmp(line, "HTTP/", 5) == 0)
        f->headers_done = 0;
    else if ((len == 2 && line[0] == '\r' && line[1] == '\n') || (len == 1 && line[0] == '\n'))
        f->headers_done = 1;
    return len;
}

static curl_socket_t on_open_socket(void *ud, curlsocktype purpose, struct curl_sockaddr *addr)
{
    struct fetcher *f = ud;
    const struct config *cfg = f->job->cfg;
    enum policy_verdict v;

    if (purpose != CURLSOCKTYPE_IPCXN)
        return CURL_SOCKET_BAD;
    v = policy_check(&cfg->allow, &cfg->deny, &f->env->self, &addr->addr);
    if (v != POLICY_ALLOW) {
        const void *a = addr->family == AF_INET
            ? (const void *)&((struct sockaddr_in *)&addr->addr)->sin_addr
            : (const void *)&((struct sockaddr_in6 *)&addr->addr)->sin6_addr;
        f->blocked = (int)v;
        if (inet_ntop(addr->family, a, f->blocked_addr, sizeof(f->blocked_addr)) == NULL)
            (void)snprintf(f->blocked_addr, sizeof(f->blocked_addr), "?");
        return CURL_SOCKET_BAD;
    }
    return socket(addr->family, addr->socktype | SOCK_CLOEXEC, addr->protocol);
}

/* ---- setting up one request -------------------------------------------- */

static int item_has_header(const struct item_req *it, const char *line)
{
    size_t n = strcspn(line, ":;");

    for (size_t i = 0; i < it->nheaders; i++) {
        if (strncasecmp(it->headers[i], line, n) == 0 &&
            (it->headers[i][n] == ':' || it->headers[i][n] == ';'))
            return 1;
    }
    return 0;
}

/* Client headers named in forward_headers, then the item's own, then
 * what fanoutd sets about the body. NULL on allocation failure. */
static struct curl_slist *build_headers(const struct job *job, const struct item_req *it, int *ok)
{
    struct curl_slist *list = NULL, *next;
    const char *extra[3];
    size_t nextra = 0;

    *ok = 1;
    for (size_t i = 0; i < job->nforward; i++) {
        if (item_has_header(it, job->forward[i]))
            continue;   /* the item's own value wins */
        if ((next = curl_slist_append(list, job->forward[i])) == NULL)
            goto fail;
        list = next;
    }
    for (size_t i = 0; i < it->nheaders; i++) {
        if ((next = curl_slist_append(list, it->headers[i])) == NULL)
            goto fail;
        list = next;
    }
    extra[nextra++] = "Expect:";     /* no 100-continue round trip */
    if (it->body != NULL && !it->has_content_type)
        extra[nextra++] = it->body_is_json ? "Content-Type: application/json"
                                           : "Content-Type:"; /* a string is sent as is */
    for (size_t i = 0; i < nextra; i++) {
        if ((next = curl_slist_append(list, extra[i])) == NULL)
            goto fail;
        list = next;
    }
    return list;
fail:
    curl_slist_free_all(list);
    *ok = 0;
    return NULL;
}

static void set_method(CURL *e, const struct item_req *it)
{
    switch (it->method) {
    case M_GET:
        if (it->body != NULL)
            curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, "GET");
        break;
    case M_HEAD:
        curl_easy_setopt(e, CURLOPT_NOBODY, 1L);
        return;
    case M_POST:
        curl_easy_setopt(e, CURLOPT_POST, 1L);
        break;
    default:
        curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, http_method_name(it->method));
        break;
    }
    if (it->body != NULL || it->method == M_POST) {
        curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)it->body_len);
        curl_easy_setopt(e, CURLOPT_POSTFIELDS, it->body ? it->body : "");
    }
}

/* Options that are the same for every fetch: set once per easy handle. */
static void set_constant_options(struct fetcher *f)
{
    CURL *e = f->easy;

    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_SHARE, f->env->share);
    curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(e, CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(e, CURLOPT_FOLLOWLOCATION, 1L);
    curl_easy_setopt(e, CURLOPT_PROXY, "");            /* proxy variables are ignored */
    curl_easy_setopt(e, CURLOPT_ACCEPT_ENCODING, "");  /* decoded bytes count against the cap */
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, f);
    curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(e, CURLOPT_HEADERDATA, f);
    curl_easy_setopt(e, CURLOPT_OPENSOCKETFUNCTION, on_open_socket);
    curl_easy_setopt(e, CURLOPT_OPENSOCKETDATA, f);
    curl_easy_setopt(e, CURLOPT_ERRORBUFFER, f->errbuf);
    curl_easy_setopt(e, CURLOPT_USERAGENT, "fanoutd/" FANOUTD_VERSION);
    /* The cap is enforced as the body streams in (on_body), not from an
     * announced Content-Length: curl's MAXFILESIZE would stop before the
     * headers are complete (no status then) and misjudge HEAD answers. */
}

/* The item's own options. Everything the previous fetch may have set is
 * set again here, so the handle needs no curl_easy_reset between fetches. */
static void set_item_options(struct fetcher *f, const struct item_req *it,
                             const struct config *cfg, long timeout_ms,
                             struct curl_slist *headers)
{
    CURL *e = f->easy;

    curl_easy_setopt(e, CURLOPT_URL, it->url);
    curl_easy_setopt(e, CURLOPT_MAXREDIRS, cfg->max_redirects);
    curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, timeout_ms);
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, headers);
    /* Back to a plain GET: clears NOBODY, POST and a custom method. */
    curl_easy_setopt(e, CURLOPT_HTTPGET, 1L);
    curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, NULL);
    set_method(e, it);
}

/* ---- the outcome -------------------------------------------------------- */

/* A Content-Type value as valid UTF-8: kept if it is, else read as Latin-1
 * (what HTTP header bytes historically are). NULL on allocation failure. */
static char *clean_content_type(const char *ct)
{
    size_t n = strnlen(ct, FO_MAX_CONTENT_TYPE);
    char *out;

    if (utf8_valid(ct, n))
        return strndup(ct, n);
    if ((out = malloc(2 * n + 1)) == NULL)
        return NULL;
    size_t j = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)ct[i];
        if (c < 0x80) {
            out[j++] = (char)c;
        } else {
            out[j++] = (char)(0xc0 | (c >> 6));
            out[j++] = (char)(0x80 | (c & 0x3f));
        }
    }
    out[j] = '\0';
    return out;
}

static enum item_error map_error(CURLcode rc, const struct fetcher *f, int deadline_bound)
{
    switch (rc) {
    case CURLE_UNSUPPORTED_PROTOCOL:
    case CURLE_URL_MALFORMAT:
        return ERR_INVALID_URL;
    case CURLE_COULDNT_RESOLVE_HOST:
        return ERR_DNS;
    case CURLE_COULDNT_CONNECT:
        return f->blocked ? ERR_BLOCKED : ERR_CONNECT;
    case CURLE_OPERATION_TIMEDOUT:
        return deadline_bound ? ERR_DEADLINE : ERR_TIMEOUT;
    case CURLE_TOO_MANY_REDIRECTS:
        return ERR_REDIRECTS;
    case CURLE_SSL_CONNECT_ERROR:
    case CURLE_PEER_FAILED_VERIFICATION:
    case CURLE_SSL_CERTPROBLEM:
    case CURLE_SSL_CIPHER:
    case CURLE_SSL_CACERT_BADFILE:
    case CURLE_SSL_ISSUER_ERROR:
    case CURLE_SSL_PINNEDPUBKEYNOTMATCH:
    case CURLE_SSL_INVALIDCERTSTATUS:
    case CURLE_SSL_CRL_BADFILE:
    case CURLE_SSL_SHUTDOWN_FAILED:
    case CURLE_SSL_ENGINE_NOTFOUND:
    case CURLE_SSL_ENGINE_SETFAILED:
    case CURLE_SSL_ENGINE_INITFAILED:
    case CURLE_USE_SSL_FAILED:
        return ERR_TLS;
    case CURLE_FILESIZE_EXCEEDED:
        return ERR_TOO_LARGE;
    case CURLE_WRITE_ERROR:
        return f->too_large ? ERR_TOO_LARGE : ERR_UPSTREAM;
    case CURLE_ABORTED_BY_CALLBACK:   /* our own stop (see perform) */
        return ERR_CANCELLED;
    default:
        return ERR_UPSTREAM;
    }
}

static void fail_from_curl(struct result *res, CURLcode rc, const struct fetcher *f,
                           const struct config *cfg, int deadline_bound, long timeout_ms)
{
    enum item_error e = map_error(rc, f, deadline_bound);
    const char *detail = f->errbuf[0] && utf8_valid(f->errbuf, strlen(f->errbuf))
                             ? f->errbuf : curl_easy_strerror(rc);

    switch (e) {
    case ERR_BLOCKED:
        if (f->blocked == POLICY_SELF)
            result_fail(res, e, "%s is fanoutd's own listening address", f->blocked_addr);
        else
            result_fail(res, e, "destination %s is not allowed by the destination policy",
                        f->blocked_addr);
        break;
    case ERR_TIMEOUT:
        result_fail(res, e, "no complete response within %ld ms", timeout_ms);
        break;
    case ERR_DEADLINE:
        result_fail(res, e, "the batch deadline passed after %ld ms of this fetch", timeout_ms);
        break;
    case ERR_TOO_LARGE:
        result_fail(res, e, "the response body is larger than max_response_bytes (%ld)",
                    cfg->max_response_bytes);
        break;
    case ERR_REDIRECTS:
        result_fail(res, e, "more than %ld redirects", cfg->max_redirects);
        break;
    case ERR_INVALID_URL:
        result_fail(res, e, "not fetched: %s (only http and https are allowed)", detail);
        break;
    default:
        result_fail(res, e, "%s", detail);
        break;
    }
}

/* Runs the transfer on the private multi handle until it ends or the job
 * stops (then CURLE_ABORTED_BY_CALLBACK). */
static CURLcode perform(struct fetcher *f)
{
    CURLcode rc = CURLE_ABORTED_BY_CALLBACK;
    int running = 1;

    if (curl_multi_add_handle(f->multi, f->easy) != CURLM_OK)
        return CURLE_OUT_OF_MEMORY;
    for (;;) {
        if (curl_multi_perform(f->multi, &running) != CURLM_OK) {
            rc = CURLE_OUT_OF_MEMORY;
            break;
        }
        if (running == 0) {
            int left;
            CURLMsg *m = curl_multi_info_read(f->multi, &left);
            rc = (m != NULL && m->msg == CURLMSG_DONE) ? m->data.result : CURLE_RECV_ERROR;
            break;
        }
        if (atomic_load(&f->job->stop))
            break;
        /* Bounded by curl's own timers too; fetch_wake() ends it early. */
        if (curl_multi_poll(f->multi, NULL, 0, 1000, NULL) != CURLM_OK) {
            rc = CURLE_OUT_OF_MEMORY;
            break;
        }
    }
    curl_multi_remove_handle(f->multi, f->easy);
    return rc;
}

/* The item's time limit: its own timeout, lowered to what is left of the
 * batch deadline; *deadline_bound says which one binds. */
static long time_limit(const struct job *job, const struct item_req *it, int64_t now_us,
                       int *deadline_bound)
{
    const struct config *cfg = job->cfg;
    long item = it->timeout_ms ? it->timeout_ms : cfg->default_timeout_ms;
    int64_t left = (job->deadline_us - now_us) / 1000;

    if (item > cfg->max_timeout_ms)
        item = cfg->max_timeout_ms;
    *deadline_bound = left < item;
    return *deadline_bound ? (long)left : item;
}

void fetch_prepare(struct fetcher *f, const struct config *cfg)
{
    if (f->easy == NULL) {
        if ((f->easy = curl_easy_init()) == NULL)
            return;   /* fetch_run fails the item */
        set_constant_options(f);
    }
    if (f->multi == NULL || cfg->generation > f->generation) {
        /* A new configuration may deny what a cached connection reaches:
         * a fresh multi handle starts with an empty connection cache. */
        CURLM *fresh = curl_multi_init();
        if (fresh != NULL) {
            if (f->multi != NULL)
                curl_multi_cleanup(f->multi);
            f->multi = fresh;
            f->generation = cfg->generation;
        }
    }
}

/* The body as its JSON value, capped at what is left of the answer's
 * max_answer_bytes: a body that cannot fit is refused as soon as its
 * encoded form passes that, not after it has been written whole (text of
 * control bytes is 6x its size as \u0001 escapes). */
static void encode_result(struct fetcher *f, struct job *job, struct result *res)
{
    size_t left = f->body.len > 0 ? job_answer_left(job) : 0;
    struct buf enc;
    fo_err err;

    if (f->body.len > 0 && left == 0) {
        result_fail(res, ERR_TOO_LARGE, FO_ANSWER_CAP_MSG, job->cfg->max_answer_bytes);
        return;
    }
    buf_init(&enc, left);
    /* One allocation for the usual case: JSON copied, text quoted. */
    if (buf_reserve(&enc, f->body.len + 16) != FO_OK)
        buf_free(&enc);   /* it will grow as it goes, or fail there */
    err = body_encode(&enc, res->content_type, f->body.data, f->body.len, &res->enc);
    if (err == FO_OK) {
        res->body = buf_steal(&enc, &res->body_len);
        return;
    }
    buf_free(&enc);
    if (err == FO_ETOOBIG)
        result_fail(res, ERR_TOO_LARGE, FO_ANSWER_CAP_MSG, job->cfg->max_answer_bytes);
    else
        result_fail(res, ERR_UPSTREAM, "out of memory encoding the body");
}

void fetch_pin(struct fetcher *f, const char *hostport, const char *addrport)
{
    int n = snprintf(f->pin, sizeof(f->pin), "%s:%s", hostport, addrport);

    if (n < 0 || (size_t)n >= sizeof(f->pin))
        f->pin[0] = '\0';    /* cannot be written: libcurl resolves the host itself */
}

void fetch_run(struct fetcher *f, struct job *job, size_t i, struct result *res)
{
    const struct item_req *it = &job->req.items[i];
    const struct config *cfg = job->cfg;
    struct curl_slist *headers, *pin = NULL;
    int64_t start = fo_now_us();
    int deadline_bound, ok;
    long timeout_ms = time_limit(job, it, start, &deadline_bound), status = 0;
    char *ct = NULL;
    CURLcode rc;

    memset(res, 0, sizeof(*res));
    if (f->pin[0] != '\0') {
        pin = curl_slist_append(NULL, f->pin);   /* NULL: libcurl resolves the host itself */
        f->pin[0] = '\0';
    }
    if (timeout_ms <= 0) {
        result_fail(res, ERR_DEADLINE, "the batch deadline passed before the item started");
        curl_slist_free_all(pin);
        return;
    }
    if (f->easy == NULL || f->multi == NULL) {
        result_fail(res, ERR_UPSTREAM, "out of memory");
        curl_slist_free_all(pin);
        return;
    }
    f->job = job;
    f->blocked = 0;
    f->too_large = 0;
    f->nomem = 0;
    f->headers_done = 0;
    f->errbuf[0] = '\0';
    buf_reset(&f->body);
    f->body.cap = (size_t)cfg->max_response_bytes;
    headers = build_headers(job, it, &ok);
    if (!ok) {
        result_fail(res, ERR_UPSTREAM, "out of memory");
        curl_slist_free_all(pin);
        return;
    }
    set_item_options(f, it, cfg, timeout_ms, headers);
    curl_easy_setopt(f->easy, CURLOPT_CONNECT_TO, pin);
    rc = perform(f);
    /* A status counts only once its response's headers are all in: a reset
     * in the middle of them leaves the item without a response. */
    if (f->headers_done && curl_easy_getinfo(f->easy, CURLINFO_RESPONSE_CODE, &status) == CURLE_OK &&
        status > 0 && status < 1000)
        res->status = (int)status;
    if (res->status > 0 && curl_easy_getinfo(f->easy, CURLINFO_CONTENT_TYPE, &ct) == CURLE_OK &&
        ct != NULL)
        res->content_type = clean_content_type(ct);
    METRIC_ADD(upstream_bytes, (int64_t)f->body.len);
    if (rc != CURLE_OK || f->nomem) {
        fail_from_curl(res, rc, f, cfg, deadline_bound, timeout_ms);
    } else {
        encode_result(f, job, res);
    }
    res->duration_ms = (double)(fo_now_us() - start) / 1000.0;
    curl_easy_setopt(f->easy, CURLOPT_HTTPHEADER, NULL);
    curl_easy_setopt(f->easy, CURLOPT_CONNECT_TO, NULL);
    curl_slist_free_all(headers);
    curl_slist_free_all(pin);
    if (f->body.alloc > FETCH_KEEP_BUFFER)
        buf_free(&f->body);
    f->job = NULL;
}
