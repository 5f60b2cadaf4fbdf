/*
 * fetch.c - upstream fetches with libcurl (see fetch.h).
 *
 * fetch_run():  for each hop of the item (its URL, then each redirect it
 *               follows): choose the hop's method, body and headers
 *               (hop_headers, the one place that decides what goes
 *               upstream) -> set the options -> run the transfer on the
 *               worker's private multi handle (whose connection cache keeps
 *               keep-alive connections between fetches) -> read the final
 *               response's status, Content-Type and Location from the
 *               header callback. Then map the outcome to the contract's
 *               result: status, content type, encoded body, or an error.
 *
 * Redirects are followed here, not by libcurl (CURLOPT_FOLLOWLOCATION is
 * off): libcurl keeps a custom verb while it drops the body, and keeps the
 * first response's Content-Type. Each hop is a transfer of its own, with
 * its Location resolved by libcurl's URL API against the current URL, the
 * method and body chosen by the rules of RFC 9110 15.4 as the contract
 * states them, and every connection still opened through the destination
 * policy. The item's timeout covers all hops together.
 *
 * At most once: libcurl re-sends a request on a fresh connection when a
 * reused keep-alive connection turns out dead, even after the request went
 * out (lib/transfer.c Curl_retry_request, rewinding the body). There is no
 * option to stop that retry before libcurl 8.16 (CURLOPT_FORBID_RETRY_ON_REUSE),
 * but it only happens on a reused connection (bits.reuse; the HTTP/2
 * REFUSED_STREAM retry is safe by definition): a POST or PATCH is sent on a
 * fresh one (CURLOPT_FRESH_CONNECT), so it is never sent twice; other
 * methods may be retried, as HTTP allows.
 *
 * The transfer waits in curl_multi_poll, so fetch_wake() (curl_multi_wakeup,
 * thread-safe) stops it at once when the request's stop flag is set;
 * curl_easy_perform would only notice on its next progress call, up to a
 * second later.
 *
 * The fetcher sees one struct fetch_req (fetch_req.h) and nothing of the
 * batch it belongs to: time limits, headers and caps arrive resolved.
 */
#include "fetch.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>

#include "buf.h"
#include "encode.h"
#include "log.h"
#include "metrics.h"
#include "url.h"

/* A body buffer bigger than this is released after the fetch, so one big
 * response does not pin memory in an idle worker. */
#define FETCH_KEEP_BUFFER (256 * 1024)

struct fetcher {
    struct fetch_env *env;
    CURLM *multi; /* private to this worker; holds the connection cache */
    CURL *easy;
    unsigned long generation; /* of the config the handle's connections were made under */
    struct buf body;          /* the upstream body, reused from fetch to fetch */
    char errbuf[CURL_ERROR_SIZE];

    /* Per fetch. */
    const struct fetch_req *req; /* borrowed for the fetch */
    int blocked;                 /* POLICY_DENY or POLICY_SELF seen when connecting */
    char blocked_addr[INET6_ADDRSTRLEN];
    int too_large;
    int nomem;

    /* Per hop: the response as the header callback reads it. Only a final
     * (non-1xx) response counts; each status line starts afresh, so
     * nothing of an earlier response (1xx, or a redirect) leaks into it. */
    int in_headers; /* between a status line and its empty line */
    int cur_status; /* of the header block being read */
    int status;     /* final response whose header block is complete, 0: none */
    int follow;     /* a redirect may be followed on this hop */
    int discard;    /* the body is a followed redirect's: dropped */
    size_t discarded;
    char *location; /* the 3xx's Location (first one), owned */
    int location_too_long;
    int has_ctype;
    char ctype[FO_MAX_CONTENT_TYPE + 1];
    char clen[24];  /* the response's Content-Length digits, "" : none yet */
    int bad_length; /* two different (or invalid) Content-Length values */
    /* Retries: the final response's Retry-After (the first one). */
    int has_retry_after;
    char retry_after[FO_RETRY_AFTER_MAX_LEN + 1];
    long sends;  /* requests sent in this hop (libcurl may re-send one) */
    long resent; /* in this fetch, requests libcurl re-sent on its own */

    /* v2 timings of the fetch so far (microseconds; see hop_timings). */
    int64_t fetch_start_us;
    int64_t t_dns, t_connect, t_tls, t_ttfb;
    int cc_no_store;  /* share: Cache-Control no-store, no-cache, private */
    long cc_max_age;  /* share: max-age=N, -1: none */
    long cc_s_maxage; /* share: s-maxage=N, -1: none (a shared cache's, RFC 9111 5.2.2.10) */

    /* composition: the response headers req->keep_headers names,
     * of the header block being read (lower-case names, repeats joined). */
    char **kept_names, **kept_values;
    size_t nkept;
};

/* One item's fetch across its hops: what fanoutd sends next. */
struct hop {
    CURLU *url;                        /* the current URL; owned. NULL while plain is set */
    const char *plain;                 /* the item's URL, sent as written (plain_url): parsed
                                          into url only when a redirect, an injected header
                                          or the breaker needs its parts; borrowed */
    char *origin;                      /* the item's own "scheme://host:port", made at the
                                          first redirect; owned, NULL before */
    enum http_method method;           /* this hop's method */
    int send_body;                     /* the item's body goes with this hop */
    int body_dropped;                  /* a redirect turned the request into a bodiless GET */
    int cross_origin;                  /* a redirect has left the item's origin (stays set) */
    const struct inject_rule *inject0; /* share: the rule of the first URL, or NULL */
};

/* Redirect statuses followed (the Fetch standard's list): any other 3xx,
 * or one without a Location, is a final response. */
static int is_redirect(int status)
{
    return status == 301 || status == 302 || status == 303 || status == 307 || status == 308;
}

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
    free(f->location);
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
    fo_err err;

    if (f->discard) {
        /* A redirect's body: read (so the connection stays usable) and
         * dropped; past the response cap the hop just stops reading. */
        f->discarded += len;
        return f->discarded > f->body.cap ? 0 : len;
    }
    err = buf_append(&f->body, data, len);
    if (err == FO_OK)
        return len;
    if (err == FO_ETOOBIG)
        f->too_large = 1;
    else
        f->nomem = 1;
    return 0; /* stops the transfer */
}

/* A header field's value without surrounding white space and line end. */
static const char *field_value(const char *line, size_t len, size_t name_len, size_t *vlen)
{
    const char *v = line + name_len + 1, *end = line + len;

    while (v < end && (*v == ' ' || *v == '\t'))
        v++;
    while (end > v && (end[-1] == '\r' || end[-1] == '\n' || end[-1] == ' ' || end[-1] == '\t'))
        end--;
    *vlen = (size_t)(end - v);
    return v;
}

static int field_is(const char *line, size_t len, const char *name, size_t *name_len)
{
    size_t n = strlen(name);

    *name_len = n;
    return len > n && line[n] == ':' && strncasecmp(line, name, n) == 0;
}

static void kept_clear(struct fetcher *f);
static void kept_field(struct fetcher *f, const char *line, size_t len);
static void kept_move(struct fetcher *f, struct result *res);

/* "HTTP/1.1 200 OK": a new response starts; nothing of the last one stays. */
static void response_begin(struct fetcher *f, const char *line, size_t len)
{
    const char *sp = memchr(line, ' ', len);
    int code = 0;

    if (sp != NULL && (size_t)(sp - line) + 4 <= len) {
        for (int i = 1; i <= 3 && sp[i] >= '0' && sp[i] <= '9'; i++)
            code = code * 10 + (sp[i] - '0');
    }
    f->in_headers = 1;
    f->cur_status = code >= 100 ? code : 0;
    f->status = 0;
    f->has_ctype = 0;
    f->clen[0] = '\0';
    f->has_retry_after = 0;
    f->location_too_long = 0;
    f->cc_no_store = 0;
    f->cc_max_age = -1;
    f->cc_s_maxage = -1;
    FO_FREE(f->location);
    kept_clear(f);
}

/* One Content-Length field: every element of its list, and of every other
 * such field of the response, must be the same number, or the response's
 * framing cannot be known (RFC 9112 6.3): 0 then. */
static int content_length_agrees(struct fetcher *f, const char *v, size_t vlen)
{
    const char *end = v + vlen;

    while (v < end) {
        const char *e = memchr(v, ',', (size_t)(end - v));
        const char *d;
        size_t n;

        if (e == NULL)
            e = end;
        while (v < e && (*v == ' ' || *v == '\t'))
            v++;
        for (d = e; d > v && (d[-1] == ' ' || d[-1] == '\t'); d--)
            ;
        n = (size_t)(d - v);
        if (n == 0 || n >= sizeof(f->clen) || strspn(v, "0123456789") < n)
            return 0;
        if (f->clen[0] == '\0') {
            memcpy(f->clen, v, n);
            f->clen[n] = '\0';
        } else if (strlen(f->clen) != n || memcmp(f->clen, v, n) != 0) {
            return 0;
        }
        v = e < end ? e + 1 : end;
    }
    return 1;
}

/* Whether directive [d, d + n) is name, with or without an argument. */
static int directive_is(const char *d, size_t n, const char *name)
{
    size_t k = strlen(name);

    return n >= k && strncasecmp(d, name, k) == 0 && (n == k || d[k] == '=');
}

/* The argument of a delta-seconds directive ("max-age=60", also quoted):
 * 1*DIGIT and nothing else (RFC 9111 1.2.2), capped at 10^8 s. 0 when it
 * is missing or malformed ("=1x", "=1.5", "=-1", "="). */
static int delta_seconds(const char *d, size_t n, long *out)
{
    const char *v = memchr(d, '=', n), *end = d + n;
    long age = 0;

    if (v == NULL)
        return 0;
    v++;
    if (v < end && *v == '"') { /* quoted-string form, tolerated (RFC 9111 5.2) */
        if (end - v < 2 || end[-1] != '"')
            return 0;
        v++;
        end--;
    }
    if (v == end)
        return 0;
    for (; v < end; v++) {
        if (*v < '0' || *v > '9')
            return 0;
        age = age < 100000000L ? age * 10 + (*v - '0') : age;
    }
    *out = age;
    return 1;
}

/* share: the directives of a Cache-Control value that the cache heeds. */
static void cache_control(struct fetcher *f, const char *v, size_t len)
{
    size_t i = 0;

    while (i < len) {
        while (i < len && (v[i] == ' ' || v[i] == '\t' || v[i] == ','))
            i++;
        size_t start = i;
        while (i < len && v[i] != ',')
            i++;
        const char *d = v + start;
        size_t n = i - start;
        while (n > 0 && (d[n - 1] == ' ' || d[n - 1] == '\t'))
            n--;
        if (directive_is(d, n, "no-store") || directive_is(d, n, "no-cache") ||
            directive_is(d, n, "private")) {
            f->cc_no_store = 1;
        } else if (directive_is(d, n, "max-age") || directive_is(d, n, "s-maxage")) {
            int shared = d[0] == 's' || d[0] == 'S';
            long *to = shared ? &f->cc_s_maxage : &f->cc_max_age;
            long age;
            if (!delta_seconds(d, n, &age)) {
                f->cc_no_store = 1; /* malformed: not kept (RFC 9111 4.2.1) */
                continue;
            }
            if (*to < 0 || age < *to)
                *to = age;
        }
    }
}

/* The empty line: a final response's headers are complete (a 1xx is not
 * a response to report: its block is forgotten at the next status line). */
static void response_end(struct fetcher *f)
{
    if (!f->in_headers)
        return; /* the end of trailers */
    f->in_headers = 0;
    if (f->cur_status < 200)
        return;
    f->status = f->cur_status;
    f->discard = f->follow && is_redirect(f->status) &&
                 (f->location != NULL || f->location_too_long);
}

static void response_field(struct fetcher *f, const char *line, size_t len)
{
    size_t n, vlen;
    const char *v;

    if (f->req != NULL && f->req->nkeep_headers > 0)
        kept_field(f, line, len);
    if (field_is(line, len, "Content-Length", &n)) {
        v = field_value(line, len, n, &vlen);
        if (!content_length_agrees(f, v, vlen))
            f->bad_length = 1;
    } else if (field_is(line, len, "Content-Type", &n)) {
        v = field_value(line, len, n, &vlen);
        if (vlen == 0)
            return; /* as libcurl: an empty value is no Content-Type */
        if (vlen > FO_MAX_CONTENT_TYPE)
            vlen = FO_MAX_CONTENT_TYPE;
        memcpy(f->ctype, v, vlen);
        f->ctype[vlen] = '\0';
        f->has_ctype = 1; /* the last one wins, as in libcurl */
    } else if (field_is(line, len, "Location", &n) && f->cur_status >= 300 &&
               f->cur_status < 400 && f->location == NULL && !f->location_too_long) {
        v = field_value(line, len, n, &vlen);
        if (vlen > FO_MAX_URL_LEN)
            f->location_too_long = 1;
        else if (vlen > 0 && (f->location = strndup(v, vlen)) == NULL)
            f->nomem = 1;
    } else if (field_is(line, len, "Cache-Control", &n)) {
        v = field_value(line, len, n, &vlen);
        cache_control(f, v, vlen);
    } else if (field_is(line, len, "Set-Cookie", &n)) {
        /* share: an answer that sets a cookie is one client's, never a
         * shared cache's to hand to the next (RFC 9111 3: the cache is shared). */
        f->cc_no_store = 1;
    } else if (field_is(line, len, "Retry-After", &n) && !f->has_retry_after) {
        v = field_value(line, len, n, &vlen);
        if (vlen > 0 && vlen <= FO_RETRY_AFTER_MAX_LEN) {
            memcpy(f->retry_after, v, vlen);
            f->retry_after[vlen] = '\0';
            f->has_retry_after = 1;
        }
    }
}

static size_t on_header(char *line, size_t size, size_t nitems, void *ud)
{
    struct fetcher *f = ud;
    size_t len = size * nitems;

    if (len >= 5 && memcmp(line, "HTTP/", 5) == 0)
        response_begin(f, line, len);
    else if ((len == 2 && line[0] == '\r' && line[1] == '\n') || (len == 1 && line[0] == '\n'))
        response_end(f);
    else if (f->in_headers)
        response_field(f, line, len); /* not trailers: they come after the block */
    return f->bad_length ? 0 : len;   /* 0: the transfer stops */
}

/* A request is about to be sent: libcurl calls this again when it re-sends
 * the request on a new connection (a reused one turned out dead), which
 * fanoutd counts as one more attempt (struct result.resent). */
static int on_prereq(void *ud, char *conn_primary_ip, char *conn_local_ip, int conn_primary_port,
                     int conn_local_port)
{
    struct fetcher *f = ud;

    (void)conn_primary_ip;
    (void)conn_local_ip;
    (void)conn_primary_port;
    (void)conn_local_port;
    f->sends++;
    return CURL_PREREQFUNC_OK;
}

static curl_socket_t on_open_socket(void *ud, curlsocktype purpose, struct curl_sockaddr *addr)
{
    struct fetcher *f = ud;
    enum policy_verdict v;

    if (purpose != CURLSOCKTYPE_IPCXN)
        return CURL_SOCKET_BAD;
    v = policy_check(f->req->allow, f->req->deny, &f->env->self, &addr->addr);
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

/* ---- one hop's request ---------------------------------------------------- */

/* Headers that belong to the item's origin: once a redirect has left it
 * (scheme, host or port differ), they are not sent on that hop or any
 * later one. Credentials (a client's or an item's must not reach another origin),
 * and Host, which would name the wrong server. */
static const char *const origin_headers[] = { "Authorization", "Cookie", "Proxy-Authorization",
                                              "Host" };

/* Headers that describe the body: dropped with it when a redirect turns the
 * request into a GET (the Fetch standard's request-body-header names). */
static const char *const body_headers[] = { "Content-Type", "Content-Encoding",
                                            "Content-Language", "Content-Location" };

/* share: the inject_header rule for URL u (its origin, and its path with
 * the query), or NULL in *out. FO_ENOMEM. */
static fo_err hop_inject(const struct fetch_req *req, CURLU *u, const struct inject_rule **out)
{
    char *origin = NULL, *path = NULL;

    *out = NULL;
    if (url_origin_path(u, &origin, &path) != FO_OK)
        return FO_ENOMEM;
    *out = config_inject_match(req->inject, req->ninject, origin, path);
    free(origin);
    free(path);
    return FO_OK;
}

/* Whether a "Name: value" (or "Name;") line is a header called name. */
static int header_is(const char *line, const char *name)
{
    size_t n = strlen(name);

    return strncasecmp(line, name, n) == 0 && (line[n] == ':' || line[n] == ';');
}

static int header_in(const char *line, const char *const *names, size_t count)
{
    for (size_t i = 0; i < count; i++) {
        if (header_is(line, names[i]))
            return 1;
    }
    return 0;
}

/* Whether a client or item header line is sent on this hop as it is;
 * inject: the rule of this hop's URL (or NULL). */
static int hop_keeps(const struct fetch_req *req, const struct hop *h,
                     const struct inject_rule *inject, const char *line)
{
    if (header_is(line, "CDN-Loop"))
        return 0; /* folded into fanoutd's own (append_cdn_loop) */
    if (header_is(line, "Content-Length") || header_is(line, "Transfer-Encoding"))
        return 0; /* the framing is libcurl's, from the body it sends */
    if (h->cross_origin && header_in(line, origin_headers, FO_ARRAY_LEN(origin_headers)))
        return 0;
    /* share: sensitive_headers are origin-bound too */
    if (h->cross_origin && header_in(line, (const char *const *)req->sensitive, req->nsensitive))
        return 0;
    /* share: an injected header replaces the item's or the forwarded one:
     * on every hop once the first URL is under a prefix naming it */
    if ((inject != NULL && header_is(line, inject->name)) ||
        (h->inject0 != NULL && header_is(line, h->inject0->name)))
        return 0;
    if (h->body_dropped && header_in(line, body_headers, FO_ARRAY_LEN(body_headers)))
        return 0;
    return 1;
}

static fo_err append(struct curl_slist **list, const char *line)
{
    struct curl_slist *next = curl_slist_append(*list, line);

    if (next == NULL)
        return FO_ENOMEM;
    *list = next;
    return FO_OK;
}

/*
 * The one place that decides a hop's request headers: the request's own
 * (forwarded client headers and the item's, as job_request resolved them),
 * then what fanoutd sets itself: no Expect, the body's Content-Type,
 * CDN-Loop. A redirect changes what is kept (hop_keeps). NULL with *ok = 0
 * when out of memory.
 */
static struct curl_slist *hop_headers(const struct fetch_req *req, const struct hop *h, int *ok)
{
    struct curl_slist *list = NULL;
    int fields = h->send_body || h->method == M_POST || h->method == M_PUT;
    const struct inject_rule *inject = NULL;

    *ok = 0;
    if (req->ninject > 0 && hop_inject(req, h->url, &inject) != FO_OK)
        goto fail;
    for (size_t i = 0; i < req->nheaders; i++) {
        if (hop_keeps(req, h, inject, req->headers[i]) && append(&list, req->headers[i]) != FO_OK)
            goto fail;
    }
    /* share: the injected header, only on a hop under its prefix */
    if (inject != NULL && append(&list, inject->line) != FO_OK)
        goto fail;
    if (fields && append(&list, "Expect:") != FO_OK) /* no 100-continue round trip */
        goto fail;
    /* A body (or the empty one of a bodiless POST or PUT) gets no form
     * Content-Type from libcurl: the item's, JSON's, or none. */
    if (fields && !(req->has_content_type && !h->body_dropped) &&
        append(&list, h->send_body && req->body_is_json ? "Content-Type: application/json"
                                                        : "Content-Type:") != FO_OK)
        goto fail;
    if (req->cdn_loop != NULL && append(&list, req->cdn_loop) != FO_OK)
        goto fail;
    /* v2 traceparent: the item's own span on every hop, the client's tracestate. */
    if (req->traceparent[0] != '\0' &&
        (append(&list, req->traceparent) != FO_OK ||
         (req->tracestate != NULL && append(&list, req->tracestate) != FO_OK)))
        goto fail;
    *ok = 1;
    return list;
fail:
    curl_slist_free_all(list);
    return NULL;
}

/* A body travels as POSTFIELDS (sent with its Content-Length); a POST or PUT
 * without one still says Content-Length: 0, as HTTP asks of methods that
 * define a body (RFC 9110 8.6); other methods without a body send none. */
static void set_method(CURL *e, const struct fetch_req *req, const struct hop *h)
{
    int fields = h->send_body || h->method == M_POST || h->method == M_PUT;

    /* Back to a plain GET: clears NOBODY, POST and a custom method. */
    curl_easy_setopt(e, CURLOPT_HTTPGET, 1L);
    curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, NULL);
    switch (h->method) {
    case M_GET:
        if (fields)
            curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, "GET");
        break;
    case M_HEAD:
        curl_easy_setopt(e, CURLOPT_NOBODY, 1L);
        return;
    case M_POST:
        curl_easy_setopt(e, CURLOPT_POST, 1L);
        break;
    default:
        curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, http_method_name(h->method));
        break;
    }
    if (fields) {
        curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE,
                         (curl_off_t)(h->send_body ? req->body_len : 0));
        curl_easy_setopt(e, CURLOPT_POSTFIELDS, h->send_body ? req->body : "");
    }
}

/* Options that are the same for every fetch: set once per easy handle. */
static void set_constant_options(struct fetcher *f)
{
    CURL *e = f->easy;

    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_SHARE, f->env->share);
    curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(e, CURLOPT_FOLLOWLOCATION, 0L);  /* fetch_run follows redirects */
    curl_easy_setopt(e, CURLOPT_PROXY, "");           /* proxy variables are ignored */
    curl_easy_setopt(e, CURLOPT_ACCEPT_ENCODING, ""); /* decoded bytes count against the cap */
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, f);
    curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(e, CURLOPT_HEADERDATA, f);
    curl_easy_setopt(e, CURLOPT_OPENSOCKETFUNCTION, on_open_socket);
    curl_easy_setopt(e, CURLOPT_OPENSOCKETDATA, f);
    curl_easy_setopt(e, CURLOPT_PREREQFUNCTION, on_prereq);
    curl_easy_setopt(e, CURLOPT_PREREQDATA, f);
    curl_easy_setopt(e, CURLOPT_ERRORBUFFER, f->errbuf);
    curl_easy_setopt(e, CURLOPT_USERAGENT, "fanoutd/" FANOUTD_VERSION);
    /* The cap is enforced as the body streams in (on_body), not from an
     * announced Content-Length: curl's MAXFILESIZE would stop before the
     * headers are complete (no status then) and misjudge HEAD answers. */
}

/* ---- the hops ------------------------------------------------------------ */

/* "scheme://host:port" of u (host lowercased, default port filled in). */
/*
 * Points h->url at ref, resolved against the current URL (or absolute for
 * the first hop), as the request will be sent: non-ASCII bytes of path and
 * query percent-encoded as UTF-8, an internationalised host as its A-label.
 * FO_EINVAL with why set: not an http(s) URL that can be fetched.
 */
static fo_err hop_set_url(struct hop *h, const char *ref, struct fo_msg *why)
{
    char *scheme = NULL;
    fo_err err = FO_EINVAL;
    CURLUcode uc;

    uc = curl_url_set(h->url, CURLUPART_URL, ref, CURLU_URLENCODE | CURLU_ALLOW_SPACE);
    if (uc == CURLUE_OUT_OF_MEMORY) {
        err = FO_ENOMEM;
        goto out;
    }
    if (uc != CURLUE_OK || curl_url_get(h->url, CURLUPART_SCHEME, &scheme, 0) != CURLUE_OK ||
        (strcasecmp(scheme, "http") != 0 && strcasecmp(scheme, "https") != 0)) {
        fo_msg_set(why, "'%.200s' is not an http or https URL (only http and https are allowed)",
                   ref);
        goto out;
    }
    err = url_ascii_host(h->url, why);
out:
    curl_free(scheme);
    return err;
}

/*
 * 1 if url goes out exactly as written, so that libcurl may parse it once
 * from CURLOPT_URL: http or https, printable ASCII only (batch.c's
 * url_check has refused white space and control bytes), so that
 * hop_set_url would encode nothing, and no "xn--" label, whose A-label
 * hop_set_url would check.
 */
static int plain_url(const char *url)
{
    if (strncasecmp(url, "http://", 7) != 0 && strncasecmp(url, "https://", 8) != 0)
        return 0;
    for (const unsigned char *p = (const unsigned char *)url; *p; p++) {
        if (*p >= 0x80 || ((*p | 0x20) == 'x' && strncasecmp((const char *)p, "xn--", 4) == 0))
            return 0;
    }
    return 1;
}

/* h->url from h->plain, when a hop needs the URL's parts. */
static fo_err hop_parse(struct hop *h, struct fo_msg *why)
{
    if (h->url != NULL)
        return FO_OK;
    if ((h->url = curl_url()) == NULL)
        return FO_ENOMEM;
    fo_err err = hop_set_url(h, h->plain, why);
    h->plain = NULL;
    return err;
}

static fo_err hop_init(struct hop *h, const struct fetch_req *req, struct fo_msg *why)
{
    fo_err err;

    memset(h, 0, sizeof(*h));
    h->method = req->method;
    h->send_body = req->body != NULL && req->method != M_HEAD;
    h->plain = req->url;
    if ((!plain_url(req->url) || req->ninject > 0) && (err = hop_parse(h, why)) != FO_OK)
        return err;
    if (req->ninject > 0 && (err = hop_inject(req, h->url, &h->inject0)) != FO_OK)
        return err;
    return FO_OK; /* h->origin: at the first redirect (most fetches have none) */
}

static void hop_free(struct hop *h)
{
    curl_url_cleanup(h->url);
    free(h->origin);
    memset(h, 0, sizeof(*h));
}

/*
 * The next hop after a redirect with this status to location: 303 makes
 * it a GET without a body (HEAD stays HEAD); 301 and 302 make a POST a GET
 * without a body and keep every other method with its body; 307 and 308
 * keep method and body (RFC 9110 15.4).
 */
static fo_err hop_next(struct hop *h, int status, const char *location, struct fo_msg *why)
{
    char *origin = NULL;
    fo_err err;

    if ((err = hop_parse(h, why)) != FO_OK)
        return err;
    /* The item's own origin, from its URL while it is still the current one. */
    if (h->origin == NULL && (err = url_origin(h->url, &h->origin)) != FO_OK)
        return err;
    if (location[0] == '#') {
        /* Only a fragment: the same path and query (RFC 3986 5.2.2), which
         * libcurl's relative resolution gets wrong; a fragment is never sent. */
        if (curl_url_set(h->url, CURLUPART_FRAGMENT, NULL, 0) == CURLUE_OUT_OF_MEMORY)
            return FO_ENOMEM;
    } else if ((err = hop_set_url(h, location, why)) != FO_OK) {
        return err;
    }
    if ((err = url_origin(h->url, &origin)) != FO_OK)
        return err;
    if (strcmp(origin, h->origin) != 0)
        h->cross_origin = 1;
    free(origin);
    if ((status == 303 && h->method != M_HEAD) ||
        ((status == 301 || status == 302) && h->method == M_POST)) {
        h->method = M_GET;
        h->body_dropped = 1;
        h->send_body = 0;
    }
    return FO_OK;
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
    case CURLE_ABORTED_BY_CALLBACK: /* our own stop (see perform) */
        return ERR_CANCELLED;
    default:
        return ERR_UPSTREAM;
    }
}

static void fail_from_curl(struct result *res, CURLcode rc, const struct fetcher *f,
                           const struct fetch_req *req, int deadline_bound, long timeout_ms)
{
    enum item_error e = map_error(rc, f, deadline_bound);
    const char *detail = f->errbuf[0] && utf8_valid(f->errbuf, strlen(f->errbuf))
                             ? f->errbuf
                             : curl_easy_strerror(rc);

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
                    req->max_response_bytes);
        break;
    case ERR_REDIRECTS:
        result_fail(res, e, "more than %ld redirects", req->max_redirects);
        break;
    case ERR_INVALID_URL:
        result_fail(res, e, "not fetched: %s (only http and https are allowed)", detail);
        break;
    default:
        result_fail(res, e, "%s", detail);
        break;
    }
}

/* Runs the transfer on the private multi handle until it ends or the
 * request's stop flag is set (then CURLE_ABORTED_BY_CALLBACK). */
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
        if (f->req->stop != NULL && atomic_load(f->req->stop))
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

/* The item's time limit: its own (resolved) timeout, lowered to what is
 * left of the batch deadline; *deadline_bound says which one binds. */
static long time_limit(const struct fetch_req *req, int64_t now_us, int *deadline_bound)
{
    int64_t left = (req->deadline_us - now_us) / 1000;

    *deadline_bound = req->deadline_us != 0 && left < req->timeout_ms;
    return *deadline_bound ? (long)left : req->timeout_ms;
}

void fetch_prepare(struct fetcher *f, unsigned long generation)
{
    if (f->easy == NULL) {
        if ((f->easy = curl_easy_init()) == NULL)
            return; /* fetch_run fails the item */
        set_constant_options(f);
    }
    if (f->multi == NULL || generation > f->generation) {
        /* A new configuration may deny what a cached connection reaches:
         * a fresh multi handle starts with an empty connection cache. */
        CURLM *fresh = curl_multi_init();
        if (fresh != NULL) {
            if (f->multi != NULL)
                curl_multi_cleanup(f->multi);
            f->multi = fresh;
            f->generation = generation;
        }
    }
}

/*
 * v2 timings: adds this hop's phases, from libcurl's own timers
 * (CURLINFO_*_TIME_T, microseconds from the hop's start), to the fetch's:
 * DNS (NAMELOOKUP), connect (CONNECT less NAMELOOKUP; for a connection
 * that failed, the time until it failed), TLS (APPCONNECT less CONNECT).
 * A reused connection reports none of them. Time to first byte is the
 * last hop's (the final response's): from the fetch's start to the hop's
 * start, plus its STARTTRANSFER; 0 when no byte came.
 */
static void hop_timings(struct fetcher *f, CURLcode rc, int64_t hop_start)
{
    curl_off_t dns = 0, conn = 0, tls = 0, first = 0, total = 0;

    (void)curl_easy_getinfo(f->easy, CURLINFO_NAMELOOKUP_TIME_T, &dns);
    (void)curl_easy_getinfo(f->easy, CURLINFO_CONNECT_TIME_T, &conn);
    (void)curl_easy_getinfo(f->easy, CURLINFO_APPCONNECT_TIME_T, &tls);
    (void)curl_easy_getinfo(f->easy, CURLINFO_STARTTRANSFER_TIME_T, &first);
    (void)curl_easy_getinfo(f->easy, CURLINFO_TOTAL_TIME_T, &total);
    f->t_dns += dns;
    if (conn > dns)
        f->t_connect += conn - dns;
    else if (conn == 0 && rc == CURLE_COULDNT_CONNECT && total > dns)
        f->t_connect += total - dns;
    if (tls > conn && conn > 0)
        f->t_tls += tls - conn;
    f->t_ttfb = first > 0 ? (hop_start - f->fetch_start_us) + first : 0;
}

/* Runs one hop: its options, then the transfer. A redirect body that the
 * hop stopped reading (over the response cap) is no failure. */
static CURLcode run_hop(struct fetcher *f, const struct fetch_req *req, const struct hop *h,
                        long left_ms, int follow)
{
    struct curl_slist *headers;
    char *url = NULL;
    CURLcode rc;
    int ok;

    f->blocked = 0;
    f->too_large = 0;
    f->nomem = 0;
    f->in_headers = 0;
    f->cur_status = 0;
    f->status = 0;
    f->follow = follow;
    f->discard = 0;
    f->discarded = 0;
    f->has_ctype = 0;
    f->clen[0] = '\0';
    f->bad_length = 0;
    f->has_retry_after = 0;
    f->location_too_long = 0;
    FO_FREE(f->location);
    kept_clear(f);
    f->errbuf[0] = '\0';
    buf_reset(&f->body);
    headers = hop_headers(req, h, &ok);
    if (!ok || (h->plain == NULL && curl_url_get(h->url, CURLUPART_URL, &url, 0) != CURLUE_OK)) {
        curl_slist_free_all(headers);
        f->nomem = 1;
        return CURLE_OUT_OF_MEMORY;
    }
    curl_easy_setopt(f->easy, CURLOPT_URL, h->plain != NULL ? h->plain : url);
    curl_easy_setopt(f->easy, CURLOPT_TIMEOUT_MS, left_ms);
    curl_easy_setopt(f->easy, CURLOPT_HTTPHEADER, headers);
    curl_easy_setopt(f->easy, CURLOPT_FRESH_CONNECT,
                     h->method == M_POST || h->method == M_PATCH ? 1L : 0L); /* at most once */
    set_method(f->easy, req, h);
    f->sends = 0;
    int64_t hop_start = fo_now_us();
    rc = perform(f);
    if (f->sends > 1)
        f->resent += f->sends - 1;
    if (req->timings != 0)
        hop_timings(f, rc, hop_start);
    if (rc == CURLE_WRITE_ERROR && f->discard && !f->nomem)
        rc = CURLE_OK;
    curl_easy_setopt(f->easy, CURLOPT_HTTPHEADER, NULL);
    curl_slist_free_all(headers);
    curl_free(url);
    return rc;
}

/* The body as its JSON value, capped at what is left of the answer's
 * max_answer_bytes: a body that cannot fit is refused as soon as its
 * encoded form passes that, not after it has been written whole (text of
 * control bytes is 6x its size as \u0001 escapes). */
static void encode_result(struct fetcher *f, const struct fetch_req *req, struct result *res)
{
    size_t left = f->body.len == 0           ? 0
                  : req->answer_left != NULL ? req->answer_left(req->answer_ctx)
                                             : SIZE_MAX;
    struct buf enc;
    fo_err err;

    if (f->body.len > 0 && left == 0) {
        result_fail(res, ERR_TOO_LARGE, FO_ANSWER_CAP_MSG, req->max_answer_bytes);
        return;
    }
    buf_init(&enc, left);
    /* One allocation for the usual case: JSON copied, text quoted. */
    if (buf_reserve(&enc, f->body.len + 16) != FO_OK)
        buf_free(&enc); /* it will grow as it goes, or fail there */
    err = body_encode(&enc, res->content_type, f->body.data, f->body.len, &res->enc);
    if (err == FO_OK) {
        res->body = buf_steal(&enc, &res->body_len);
        return;
    }
    buf_free(&enc);
    if (err == FO_ETOOBIG)
        result_fail(res, ERR_TOO_LARGE, FO_ANSWER_CAP_MSG, req->max_answer_bytes);
    else
        result_fail(res, ERR_UPSTREAM, "out of memory encoding the body");
}

/* The response f's hop has read (status > 0) becomes res's status and
 * content type: the last response whose headers arrived is what an error
 * on a later hop reports. FO_ENOMEM when the type cannot be copied. */
static fo_err keep_response(const struct fetcher *f, struct result *res)
{
    res->status = f->status;
    FO_FREE(res->content_type);
    if (f->has_ctype && (res->content_type = clean_content_type(f->ctype)) == NULL)
        return FO_ENOMEM;
    return FO_OK;
}

/* ---- retries and the circuit breaker ------------------------------ */

/* A Retry-After value as a wait in ms from now: delay-seconds or an HTTP
 * date (any form libcurl reads; a past date: 0). 0 if it is neither. */
static int retry_after_ms(const char *v, long *ms)
{
    size_t digits = strspn(v, "0123456789");

    if (digits > 0 && v[digits] == '\0') {
        long long secs;
        if (fo_parse_num(v, 0, 86400LL * 365, &secs) == FO_ETOOBIG)
            secs = 86400LL * 365; /* far beyond any timeout: no retry */
        *ms = (long)(secs * 1000);
        return 1;
    }
    time_t at = curl_getdate(v, NULL), now = time(NULL);
    if (at == (time_t)-1)
        return 0;
    *ms = at <= now ? 0 : (at - now > 86400L * 365 ? 86400L * 365 : (long)(at - now)) * 1000;
    return 1;
}

/* How the hop just run went, for the breaker (fetch_req.h): a response is a
 * success unless 5xx; connect_failed, tls_error and upstream_error are
 * failures, and so is a timeout when req->timeout_counts (the item allowed
 * at least default_timeout_ms); the batch deadline, the policy, a stop, a
 * DNS failure, a shorter timeout or running out of memory count neither way. */
static enum fetch_hop_outcome hop_outcome(const struct fetcher *f, const struct fetch_req *req,
                                          CURLcode rc, int deadline_bound)
{
    if (f->nomem || (req->stop != NULL && atomic_load(req->stop)))
        return FETCH_HOP_NEUTRAL;
    if (rc == CURLE_OK)
        return f->status == 0 || f->status >= 500 ? FETCH_HOP_FAILED : FETCH_HOP_OK;
    switch (map_error(rc, f, deadline_bound)) {
    case ERR_TIMEOUT:
        return req->timeout_counts ? FETCH_HOP_FAILED : FETCH_HOP_NEUTRAL;
    case ERR_CONNECT:
    case ERR_TLS:
    case ERR_UPSTREAM:
        return FETCH_HOP_FAILED;
    case ERR_TOO_LARGE: /* the host answered */
        return f->status >= 500 ? FETCH_HOP_FAILED : FETCH_HOP_OK;
    default:
        return FETCH_HOP_NEUTRAL;
    }
}

/* Tells req->hop_done how the hop to h's "host:port" went. */
static void report_hop(const struct fetcher *f, const struct fetch_req *req, struct hop *h,
                       CURLcode rc, int deadline_bound)
{
    char *host = NULL, *port = NULL;
    char hostport[FO_MAX_URL_LEN + 16];
    struct fo_msg why;

    if (hop_parse(h, &why) == FO_OK &&
        curl_url_get(h->url, CURLUPART_HOST, &host, 0) == CURLUE_OK &&
        curl_url_get(h->url, CURLUPART_PORT, &port, CURLU_DEFAULT_PORT) == CURLUE_OK) {
        int n = snprintf(hostport, sizeof(hostport), "%s:%s", host, port);
        if (n > 0 && (size_t)n < sizeof(hostport))
            req->hop_done(req->hop_ctx, hostport, hop_outcome(f, req, rc, deadline_bound));
    }
    curl_free(host);
    curl_free(port);
}

/* res->effective_url: the URL of the last request sent, as libcurl sent it
 * (CURLINFO_EFFECTIVE_URL: percent-encoded, A-label host) when a request
 * went out (sent), else h's; only when it is not the item's url as
 * written: after a redirect, or when the url was built from references.
 * Left out for want of memory. */
static void note_effective_url(struct fetcher *f, const struct hop *h,
                               const struct fetch_req *req, int redirected, int sent,
                               struct result *res)
{
    char *u = NULL, *used = NULL;

    res->redirected = redirected;
    FO_FREE(res->effective_url);
    if (!redirected && !req->url_templated)
        return;
    if (sent && curl_easy_getinfo(f->easy, CURLINFO_EFFECTIVE_URL, &used) == CURLE_OK &&
        used != NULL)
        res->effective_url = strdup(used);
    else if (h->url != NULL && curl_url_get(h->url, CURLUPART_URL, &u, 0) == CURLUE_OK)
        res->effective_url = strdup(u);
    else if (h->url == NULL && h->plain != NULL)
        res->effective_url = strdup(h->plain);
    curl_free(u);
}

/* Fetches the item, following redirects, into res (status, content type
 * and body of the final response, or an error). */
static void fetch_hops(struct fetcher *f, const struct fetch_req *req, struct result *res,
                       long timeout_ms, int deadline_bound, int64_t start)
{
    struct fo_msg why;
    struct hop h;
    CURLcode rc = CURLE_OK;
    long hops = 0;
    int sent = 0;
    fo_err err;

    if ((err = hop_init(&h, req, &why)) != FO_OK)
        goto url_failed;
    for (;; hops++) {
        long left_ms = timeout_ms - (long)((fo_now_us() - start) / 1000);
        if (left_ms <= 0) {
            f->status = 0; /* the next hop's response never came (the 3xx stays res's) */
            rc = CURLE_OPERATION_TIMEDOUT;
            break;
        }
        rc = run_hop(f, req, &h, left_ms, req->max_redirects > 0);
        sent = 1;
        if (req->hop_done != NULL)
            report_hop(f, req, &h, rc, deadline_bound);
        if (rc != CURLE_OK || f->nomem || !f->discard)
            break; /* a failure, or the final response */
        if (keep_response(f, res) != FO_OK) {
            err = FO_ENOMEM;
            goto url_failed;
        }
        if (hops >= req->max_redirects) {
            result_fail(res, ERR_REDIRECTS, "more than %ld redirects", req->max_redirects);
            goto out;
        }
        if (f->location_too_long) {
            fo_msg_set(&why, "the redirect's Location is longer than %d bytes", FO_MAX_URL_LEN);
            err = FO_EINVAL;
        } else {
            err = hop_next(&h, f->status, f->location, &why);
        }
        if (err != FO_OK)
            goto url_failed;
    }
    /* A status counts only once its final response's headers are all in: a
     * reset in the middle of them, or after a 1xx, leaves no response, and
     * the last one that did arrive (a followed 3xx) stays the item's. */
    if (f->status > 0 && keep_response(f, res) != FO_OK)
        f->nomem = 1;
    res->cc_no_store = f->cc_no_store; /* share: for the cache */
    /* fanoutd's cache is shared: s-maxage, when given, overrides max-age
     * (RFC 9111 5.2.2.10), and 0 keeps nothing. */
    res->cc_max_age = f->cc_s_maxage >= 0 ? f->cc_s_maxage : f->cc_max_age;
    if (res->status > 0)
        kept_move(f, res);
    if (f->bad_length && !f->nomem) {
        result_fail(res, ERR_UPSTREAM,
                    "the response's Content-Length headers disagree or are "
                    "not numbers (RFC 9112 6.3)");
    } else if (rc != CURLE_OK || f->nomem) {
        fail_from_curl(res, f->nomem && rc == CURLE_OK ? CURLE_OUT_OF_MEMORY : rc, f, req,
                       deadline_bound, timeout_ms);
    } else if (res->status == 0) {
        result_fail(res, ERR_UPSTREAM, "no final response (only informational 1xx ones)");
    } else {
        encode_result(f, req, res);
    }
    if (res->status > 0 && f->has_retry_after)
        res->has_retry_after = retry_after_ms(f->retry_after, &res->retry_after_ms);
    goto out;
url_failed:
    if (err == FO_ENOMEM)
        result_fail(res, ERR_UPSTREAM, "out of memory");
    else if (!utf8_valid(why.text, strlen(why.text))) /* bytes from an upstream's Location */
        result_fail(res, ERR_INVALID_URL,
                    "not fetched: the redirect's Location is not a usable "
                    "http or https URL");
    else
        result_fail(res, ERR_INVALID_URL, "not fetched: %s", why.text);
out:
    note_effective_url(f, &h, req, hops > 0, sent, res);
    hop_free(&h);
}

/* The CURLOPT_CONNECT_TO entry of req's pin; NULL without one, or when it
 * cannot be made (libcurl then resolves the host itself). */
static struct curl_slist *pin_entry(const struct fetch_req *req)
{
    char entry[FO_MAX_URL_LEN + 64];
    int n;

    if (req->pin_hostport == NULL || req->pin_addr == NULL)
        return NULL;
    n = snprintf(entry, sizeof(entry), "%s:%s", req->pin_hostport, req->pin_addr);
    if (n < 0 || (size_t)n >= sizeof(entry))
        return NULL;
    return curl_slist_append(NULL, entry);
}

void fetch_run(struct fetcher *f, const struct fetch_req *req, struct result *res)
{
    int64_t start = fo_now_us();
    int deadline_bound;
    long timeout_ms = time_limit(req, start, &deadline_bound);
    struct curl_slist *pin = pin_entry(req);

    memset(res, 0, sizeof(*res));
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
    f->req = req;
    f->resent = 0;
    f->fetch_start_us = start;
    f->t_dns = f->t_connect = f->t_tls = f->t_ttfb = 0;
    f->body.cap = (size_t)req->max_response_bytes;
    /* Every hop to the item's own host:port goes to the pinned address. */
    curl_easy_setopt(f->easy, CURLOPT_CONNECT_TO, pin);
    fetch_hops(f, req, res, timeout_ms, deadline_bound, start);
    curl_easy_setopt(f->easy, CURLOPT_CONNECT_TO, NULL);
    curl_slist_free_all(pin);
    METRIC_ADD(upstream_bytes, (int64_t)f->body.len);
    res->resent = f->resent;
    res->duration_ms = (double)(fo_now_us() - start) / 1000.0;
    if (req->timings != 0) {
        res->dns_ms = (double)f->t_dns / 1000.0;
        res->connect_ms = (double)f->t_connect / 1000.0;
        res->tls_ms = (double)f->t_tls / 1000.0;
        res->ttfb_ms = (double)f->t_ttfb / 1000.0;
    }
    FO_FREE(f->location);
    kept_clear(f);
    buf_reset(&f->body);
    if (f->body.alloc > FETCH_KEEP_BUFFER)
        buf_free(&f->body);
    f->req = NULL;
}

/* ---- composition: response headers kept ---------------------- */

static void kept_clear(struct fetcher *f)
{
    for (size_t i = 0; i < f->nkept; i++) {
        free(f->kept_names[i]);
        free(f->kept_values[i]);
    }
    FO_FREE(f->kept_names);
    FO_FREE(f->kept_values);
    f->nkept = 0;
}

/* A header line of the block being read: kept if req->keep_headers names
 * it (a repeat joins the earlier value with ", "). Invalid UTF-8 bytes
 * become '?' so that the value can be written as JSON text. */
static void kept_field(struct fetcher *f, const char *line, size_t len)
{
    const char *colon = memchr(line, ':', len);
    size_t n, vlen, k;
    const char *v;
    char *nv;

    if (colon == NULL || colon == line)
        return;
    n = (size_t)(colon - line);
    for (k = 0; k < f->req->nkeep_headers; k++) {
        const char *want = f->req->keep_headers[k];
        if (strlen(want) == n && strncasecmp(want, line, n) == 0)
            break;
    }
    if (k == f->req->nkeep_headers)
        return;
    v = field_value(line, len, n, &vlen);
    for (k = 0; k < f->nkept; k++) {
        if (strlen(f->kept_names[k]) == n && strncasecmp(f->kept_names[k], line, n) == 0)
            break;
    }
    if (k == f->nkept) {
        char **nn = realloc(f->kept_names, (f->nkept + 1) * sizeof(*nn));
        if (nn != NULL)
            f->kept_names = nn;
        char **vv = realloc(f->kept_values, (f->nkept + 1) * sizeof(*vv));
        if (vv != NULL)
            f->kept_values = vv;
        if (nn == NULL || vv == NULL || (f->kept_names[k] = strndup(line, n)) == NULL) {
            f->nomem = 1;
            return;
        }
        for (char *c = f->kept_names[k]; *c; c++)
            *c = (char)tolower((unsigned char)*c);
        if ((f->kept_values[k] = strndup(v, vlen)) == NULL) {
            free(f->kept_names[k]);
            f->nomem = 1;
            return;
        }
        f->nkept++;
        nv = f->kept_values[k];
    } else {
        size_t old = strlen(f->kept_values[k]);
        if ((nv = realloc(f->kept_values[k], old + vlen + 3)) == NULL) {
            f->nomem = 1;
            return;
        }
        memcpy(nv + old, ", ", 2);
        memcpy(nv + old + 2, v, vlen);
        nv[old + 2 + vlen] = '\0';
        f->kept_values[k] = nv;
    }
    if (!utf8_valid(nv, strlen(nv))) {
        for (unsigned char *c = (unsigned char *)nv; *c; c++)
            if (*c >= 0x80)
                *c = '?';
    }
}

/* The final response's kept headers become the result's. */
static void kept_move(struct fetcher *f, struct result *res)
{
    res->hdr_names = f->kept_names;
    res->hdr_values = f->kept_values;
    res->nhdr = f->nkept;
    f->kept_names = f->kept_values = NULL;
    f->nkept = 0;
}
