/*
 * server.c - the libmicrohttpd front end and the daemon's lifecycle
 * (see server.h for the request path).
 *
 * Threads: libmicrohttpd's own pool (epoll, one listener per thread) runs
 * the handler; it never waits for an upstream. The workers (queue.c) and
 * the watcher (watch.c) finish jobs and resume connections.
 *
 * Locking: srv.lock guards cfg, generation, in_flight and unsent; it is a
 * leaf lock (nothing else is locked while it is held).
 */
#include "server.h"

#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <microhttpd.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "access.h"
#include "batch.h"
#include "buf.h"
#include "encode.h"
#include "fetch.h"
#include "job.h"
#include "log.h"
#include "metrics.h"
#include "queue.h"
#include "watch.h"

#define CT_JSON "application/json"
#define CT_METRICS "text/plain; version=0.0.4; charset=utf-8"

/* REQ_OVERSIZED: the body passed max_body_bytes mid-upload; libmicrohttpd
 * cannot answer before the upload ends, so the rest is read and dropped
 * (up to FO_MAX_DISCARD bytes, then the connection is closed). */
/* Extra response headers, as name/value pairs ending in NULL. */
static const char *const retry_hdr[] = { MHD_HTTP_HEADER_RETRY_AFTER, FO_RETRY_AFTER, NULL };
static const char *const close_hdr[] = { MHD_HTTP_HEADER_CONNECTION, "close", NULL };

enum req_state { REQ_BODY = 0, REQ_OVERSIZED, REQ_RUNNING, REQ_ANSWERED };

/* Per POST /batch connection request; owned by libmicrohttpd's con_cls
 * slot and freed in on_completed. */
struct request {
    enum req_state state;
    struct MHD_Connection *conn;
    char request_id[ACCESS_ID_SIZE];   /* the client's X-Request-Id, or generated */
    char client[ACCESS_CLIENT_SIZE];   /* "address:port", for the access log */
    unsigned status;             /* of the answer, for the access log */
    size_t bytes;
    struct config *cfg;          /* a reference: the config this batch uses */
    int64_t arrival_us;
    struct buf body;             /* capped at max_body_bytes */
    struct job *job;             /* a reference, once the batch is accepted */
    size_t discarded;            /* bytes dropped in REQ_OVERSIZED */
    int reject_status;           /* set when the queue refused the batch */
    const char *reject_code;
    enum batch_outcome reject_outcome;
};

static struct server_state {
    pthread_mutex_t lock;        /* guards cfg, generation, in_flight, unsent */
    pthread_cond_t changed;      /* signalled when in_flight or unsent drop */
    struct config *cfg;
    unsigned long generation;
    long in_flight;              /* batches accepted and not finished */
    long unsent;                 /* finished batches whose answer is not sent */
    _Atomic int draining;
    _Atomic long connections;    /* client connections open now */
    struct MHD_Daemon *mhd;
    _Atomic int listening;       /* the listening socket is still open */
    struct fetch_env env;
    int env_ready, queue_ready, watch_ready;
} srv = { .lock = PTHREAD_MUTEX_INITIALIZER, .changed = PTHREAD_COND_INITIALIZER };

/* ---- configuration ------------------------------------------------------ */

void server_reload(struct config *cfg)
{
    struct config *old;

    pthread_mutex_lock(&srv.lock);
    cfg->generation = ++srv.generation;
    old = srv.cfg;
    srv.cfg = config_ref(cfg);
    pthread_mutex_unlock(&srv.lock);
    config_unref(old);
}

struct config *server_config(void)
{
    struct config *cfg;

    pthread_mutex_lock(&srv.lock);
    cfg = config_ref(srv.cfg);
    pthread_mutex_unlock(&srv.lock);
    return cfg;
}

long server_batches_in_flight(void)
{
    long n;

    pthread_mutex_lock(&srv.lock);
    n = srv.in_flight;
    pthread_mutex_unlock(&srv.lock);
    return n;
}

/* ---- responses ------------------------------------------------------------ */

/* Queues a response whose body is data (taken over: libmicrohttpd frees it).
 * With a batch request, its X-Request-Id is echoed and the status and size
 * are kept for the access log. */
static enum MHD_Result respond(struct MHD_Connection *conn, struct request *req, unsigned status,
                               const char *ctype, char *data, size_t len,
                               const char *const *headers)
{
    struct MHD_Response *resp;
    enum MHD_Result ret;

    resp = MHD_create_response_from_buffer(len, data ? data : (char *)"",
                                           data ? MHD_RESPMEM_MUST_FREE : MHD_RESPMEM_PERSISTENT);
    if (resp == NULL) {
        free(data);
        return MHD_NO;
    }
    (void)MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, ctype);
    for (; headers != NULL && headers[0] != NULL; headers += 2)
        (void)MHD_add_response_header(resp, headers[0], headers[1]);
    if (req != NULL) {
        (void)MHD_add_response_header(resp, "X-Request-Id", req->request_id);
        req->status = status;
        req->bytes = len;
    }
    ret = MHD_queue_response(conn, status, resp);
    MHD_destroy_response(resp);
    return ret;
}

/* {"error": {"code": ..., "message": ...}} with optional extra headers. */
static enum MHD_Result respond_error(struct MHD_Connection *conn, struct request *req,
                                     unsigned status, const char *code,
                                     const char *const *headers, const char *fmt, ...)
    __attribute__((format(printf, 6, 7)));

static enum MHD_Result respond_error(struct MHD_Connection *conn, struct request *req,
                                     unsigned status, const char *code,
                                     const char *const *headers, const char *fmt, ...)
{
    char text[FO_MSG_LEN];
    struct buf b;
    va_list ap;

    va_start(ap, fmt);
    (void)vsnprintf(text, sizeof(text), fmt, ap);
    va_end(ap);
    if (!utf8_valid(text, strlen(text)))
        (void)snprintf(text, sizeof(text), "%s", code);
    buf_init(&b, 0);
    if (buf_puts(&b, "{\"error\":{\"code\":") != FO_OK || json_put_cstr(&b, code) != FO_OK ||
        buf_puts(&b, ",\"message\":") != FO_OK || json_put_cstr(&b, text) != FO_OK ||
        buf_puts(&b, "}}") != FO_OK) {
        buf_free(&b);
        return MHD_NO;
    }
    size_t len;
    char *data = buf_steal(&b, &len);
    return respond(conn, req, status, CT_JSON, data, len, headers);
}

/* A constant JSON text, sent from where it is (no copy, nothing to free). */
static enum MHD_Result respond_static(struct MHD_Connection *conn, unsigned status,
                                      const char *json)
{
    struct MHD_Response *resp;
    enum MHD_Result ret;

    resp = MHD_create_response_from_buffer(strlen(json), (void *)json, MHD_RESPMEM_PERSISTENT);
    if (resp == NULL)
        return MHD_NO;
    (void)MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, CT_JSON);
    ret = MHD_queue_response(conn, status, resp);
    MHD_destroy_response(resp);
    return ret;
}

/* ---- simple endpoints ----------------------------------------------------- */

static enum MHD_Result serve_healthz(struct MHD_Connection *conn)
{
    if (atomic_load(&srv.draining))
        return respond_static(conn, MHD_HTTP_SERVICE_UNAVAILABLE, "{\"status\":\"draining\"}");
    return respond_static(conn, MHD_HTTP_OK, "{\"status\":\"ok\"}");
}

static enum MHD_Result serve_metrics(struct MHD_Connection *conn)
{
    struct buf b;
    size_t len;

    buf_init(&b, 0);
    if (metrics_render(&b) != FO_OK) {
        buf_free(&b);
        return respond_error(conn, NULL, MHD_HTTP_INTERNAL_SERVER_ERROR, "internal", NULL,
                             "out of memory");
    }
    char *data = buf_steal(&b, &len);
    return respond(conn, NULL, MHD_HTTP_OK, CT_METRICS, data, len, NULL);
}

/* ---- POST /batch: the header checks -------------------------------------- */

struct header_count {
    int content_length;
    int transfer_encoding;
    const char *loop_token;      /* this deployment's CDN-Loop token */
    int looped;                  /* a CDN-Loop header names it */
};

/* Whether a CDN-Loop value (RFC 8586: "cdn-id [; params], ...") names token
 * as one of its elements; case-insensitive, parameters ignored. */
static int cdn_loop_names(const char *value, const char *token)
{
    size_t tlen = strlen(token);

    for (const char *p = value; *p != '\0';) {
        p += strspn(p, " \t,");
        size_t n = strcspn(p, " \t,;");
        if (n == tlen && strncasecmp(p, token, n) == 0)
            return 1;
        p += strcspn(p, ",");   /* past any parameters to the next element */
    }
    return 0;
}

static enum MHD_Result count_header(void *cls, enum MHD_ValueKind kind, const char *key,
                                    const char *value)
{
    struct header_count *hc = cls;
    (void)kind;
    if (strcasecmp(key, MHD_HTTP_HEADER_CONTENT_LENGTH) == 0)
        hc->content_length++;
    else if (strcasecmp(key, MHD_HTTP_HEADER_TRANSFER_ENCODING) == 0)
        hc->transfer_encoding++;
    else if (strcasecmp(key, "CDN-Loop") == 0 && value != NULL &&
             cdn_loop_names(value, hc->loop_token))
        hc->looped = 1;
    return MHD_YES;
}

/* Constant-time comparison, so the token cannot be guessed byte by byte. */
static int token_equal(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);
    unsigned char diff = (unsigned char)(la != lb);

    for (size_t i = 0; i < la; i++)
        diff |= (unsigned char)(a[i] ^ b[i % (lb ? lb : 1)]);
    return diff == 0;
}

static int authorized(struct MHD_Connection *conn, const struct config *cfg)
{
    const char *auth;

    if (cfg->auth_token[0] == '\0')
        return 1;
    auth = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_AUTHORIZATION);
    if (auth == NULL || strncasecmp(auth, "Bearer ", 7) != 0)
        return 0;
    return token_equal(auth + 7, cfg->auth_token);
}

/* Checks done as soon as the headers are in; answers and returns 1 if the
 * request is refused. */
static int refuse_early(struct MHD_Connection *conn, struct request *req, enum MHD_Result *ret)
{
    const struct config *cfg = req->cfg;
    struct header_count hc = { .loop_token = cfg->loop_token };
    const char *cl;

    (void)MHD_get_connection_values(conn, MHD_HEADER_KIND, count_header, &hc);
    if (hc.content_length > 1 || (hc.content_length && hc.transfer_encoding)) {
        metrics_batch(OUT_BAD_REQUEST, 0);
        *ret = respond_error(conn, req, MHD_HTTP_BAD_REQUEST, "bad_request", close_hdr,
                             hc.content_length > 1
                                 ? "more than one Content-Length header"
                                 : "both Content-Length and Transfer-Encoding are present");
        return 1;
    }
    if (hc.looped) {
        metrics_batch(OUT_LOOP, 0);
        *ret = respond_error(conn, req, MHD_HTTP_LOOP_DETECTED, "loop_detected", NULL,
                             "this batch came back to fanoutd through its own fetches "
                             "(CDN-Loop names '%s')", cfg->loop_token);
        return 1;
    }
    if (atomic_load(&srv.draining)) {
        metrics_batch(OUT_DRAINING, 0);
        *ret = respond_error(conn, req, MHD_HTTP_SERVICE_UNAVAILABLE, "draining", retry_hdr,
                             "fanoutd is shutting down");
        return 1;
    }
    if (!authorized(conn, cfg)) {
        static const char *const auth_hdr[] = { MHD_HTTP_HEADER_WWW_AUTHENTICATE, "Bearer", NULL };
        metrics_batch(OUT_UNAUTHORIZED, 0);
        *ret = respond_error(conn, req, MHD_HTTP_UNAUTHORIZED, "unauthorized", auth_hdr,
                             "a valid 'Authorization: Bearer' token is required");
        return 1;
    }
    cl = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
    if (cl != NULL && strtoull(cl, NULL, 10) > (unsigned long long)cfg->max_body_bytes) {
        metrics_batch(OUT_TOO_LARGE, 0);
        *ret = respond_error(conn, req, MHD_HTTP_CONTENT_TOO_LARGE, "too_large", close_hdr,
                             "the body is larger than max_body_bytes (%ld)", cfg->max_body_bytes);
        return 1;
    }
    return 0;
}

/* ---- POST /batch: running it --------------------------------------------- */

/* Out of memory is a passing overload: 503 overloaded, try again later. */
static enum MHD_Result respond_out_of_memory(struct MHD_Connection *conn, struct request *req)
{
    metrics_batch(OUT_OVERLOADED, 0);
    return respond_error(conn, req, MHD_HTTP_SERVICE_UNAVAILABLE, "overloaded", retry_hdr,
                         "fanoutd is out of memory; try again later");
}

/* Called once by whoever finishes the job; resumes the client connection. */
static void on_job_finish(struct job *job, void *ctx)
{
    struct request *req = ctx;

    watch_remove(job);
    pthread_mutex_lock(&srv.lock);
    srv.in_flight--;
    srv.unsent++;
    METRIC_SET(batches_in_flight, srv.in_flight);
    pthread_cond_broadcast(&srv.changed);
    pthread_mutex_unlock(&srv.lock);
    /* From here on req belongs to libmicrohttpd's thread again. */
    MHD_resume_connection(req->conn);
}

struct cdn_loop {
    struct buf line;             /* "CDN-Loop: a, b", capped */
    int failed;                  /* over the cap or out of memory */
};

/* Joins the client's CDN-Loop headers into one "CDN-Loop: a, b" line. */
static enum MHD_Result join_cdn_loop(void *cls, enum MHD_ValueKind kind, const char *key,
                                     const char *value)
{
    struct cdn_loop *cl = cls;
    (void)kind;
    if (strcasecmp(key, "CDN-Loop") != 0 || value == NULL || value[0] == '\0' ||
        strpbrk(value, "\r\n") != NULL)
        return MHD_YES;
    if (buf_puts(&cl->line, cl->line.len ? ", " : "CDN-Loop: ") != FO_OK ||
        buf_puts(&cl->line, value) != FO_OK) {
        cl->failed = 1;
        return MHD_NO;
    }
    return MHD_YES;
}

/* The client headers named in forward_headers, as "Name: value" lines, and
 * always the client's CDN-Loop, which every fetch carries on with fanoutd's
 * token appended (fetch.c). */
static fo_err collect_forward(struct MHD_Connection *conn, const struct request *req,
                              char ***out, size_t *nout)
{
    const struct config *cfg = req->cfg;
    char **v = NULL;
    size_t n = 0;
    struct cdn_loop loop = { .failed = 0 };

    *out = NULL;
    *nout = 0;
    if ((v = calloc(cfg->forward_headers.n + 1, sizeof(*v))) == NULL)
        return FO_ENOMEM;
    buf_init(&loop.line, FO_MAX_FORWARD_VALUE);
    (void)MHD_get_connection_values(conn, MHD_HEADER_KIND, join_cdn_loop, &loop);
    /* Longer than the cap: left out (fanoutd's own token still goes). */
    if (!loop.failed && loop.line.len > 0 && buf_append(&loop.line, "", 1) == FO_OK)
        v[n++] = buf_steal(&loop.line, NULL);
    buf_free(&loop.line);
    for (size_t i = 0; i < cfg->forward_headers.n; i++) {
        const char *name = cfg->forward_headers.v[i];
        if (strcasecmp(name, "CDN-Loop") == 0)
            continue;   /* taken above */
        /* The request id goes upstream as fanoutd knows it (maybe generated). */
        const char *val = strcasecmp(name, "X-Request-Id") == 0
                              ? req->request_id
                              : MHD_lookup_connection_value(conn, MHD_HEADER_KIND, name);
        if (val == NULL || strlen(val) > FO_MAX_FORWARD_VALUE || strpbrk(val, "\r\n"))
            continue;
        size_t len = strlen(name) + strlen(val) + 3;
        if ((v[n] = malloc(len)) == NULL) {
            job_forward_free(v, n);
            return FO_ENOMEM;
        }
        (void)snprintf(v[n], len, val[0] ? "%s: %s" : "%s;", name, val);
        n++;
    }
    if (n == 0)
        FO_FREE(v);
    *out = v;
    *nout = n;
    return FO_OK;
}

static enum MHD_Result start_batch(struct MHD_Connection *conn, struct request *req)
{
    struct batch_req parsed;
    struct fo_msg msg;
    const char *ctype;
    char **fwd;
    size_t nfwd;
    fo_err err;

    req->state = REQ_ANSWERED;
    ctype = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_TYPE);
    err = batch_parse(req->body.data ? req->body.data : "", req->body.len,
                      batch_is_json_type(ctype), req->cfg, &parsed, &msg);
    buf_free(&req->body);
    if (err == FO_ETOOBIG) {
        metrics_batch(OUT_TOO_LARGE, 0);
        return respond_error(conn, req, MHD_HTTP_CONTENT_TOO_LARGE, "too_large", NULL, "%s", msg.text);
    }
    if (err == FO_ENOMEM)
        return respond_out_of_memory(conn, req);
    if (err != FO_OK) {
        metrics_batch(OUT_BAD_REQUEST, 0);
        return respond_error(conn, req, MHD_HTTP_BAD_REQUEST, "bad_request", NULL, "%s", msg.text);
    }
    if (collect_forward(conn, req, &fwd, &nfwd) != FO_OK) {
        batch_req_free(&parsed);
        return respond_out_of_memory(conn, req);
    }
    if (job_new(req->cfg, &parsed, fwd, nfwd, req->arrival_us, on_job_finish, req,
                &req->job) != FO_OK)
        return respond_out_of_memory(conn, req);   /* job_new freed parsed and fwd */
    req->state = REQ_RUNNING;
    pthread_mutex_lock(&srv.lock);
    srv.in_flight++;
    METRIC_SET(batches_in_flight, srv.in_flight);
    pthread_mutex_unlock(&srv.lock);

    /* Suspend first: from here on any thread may finish the job and resume. */
    MHD_suspend_connection(conn);
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CONNECTION_FD);
    if (watch_add(req->job, ci ? ci->connect_fd : -1) != FO_OK)
        log_warn("batch %llu: not watched (out of memory)", (unsigned long long)req->job->serial);
    err = queue_push(req->job, req->cfg->queue_capacity);
    if (err != FO_OK) {
        req->reject_status = MHD_HTTP_SERVICE_UNAVAILABLE;
        req->reject_code = err == FO_EFULL ? "overloaded" : "draining";
        req->reject_outcome = err == FO_EFULL ? OUT_OVERLOADED : OUT_DRAINING;
        job_finish(req->job, FINISH_REJECTED);
    }
    return MHD_YES;
}

/* The connection was resumed: the job has finished. */
static enum MHD_Result answer_batch(struct MHD_Connection *conn, struct request *req)
{
    struct job *job = req->job;
    size_t len;

    req->state = REQ_ANSWERED;
    if (req->reject_status != 0) {
        metrics_batch(req->reject_outcome, 0);
        return respond_error(conn, req, (unsigned)req->reject_status, req->reject_code, retry_hdr,
                             strcmp(req->reject_code, "overloaded") == 0
                                 ? "the batch of %zu items does not fit in the work queue"
                                 : "fanoutd is shutting down (batch of %zu items)", job->req.n);
    }
    if (job->finished == FINISH_CLIENT)
        return MHD_NO;          /* nobody to answer: close the connection */
    if (job->doc_failed)
        return respond_out_of_memory(conn, req);
    const char *const hdrs[] = { "X-Batch-Complete", job->complete ? "true" : "false", NULL };
    char *data = buf_steal(&job->doc, &len);
    return respond(conn, req, MHD_HTTP_OK, CT_JSON, data, len, hdrs);
}

static enum MHD_Result handle_batch(struct MHD_Connection *conn, struct request *req,
                                    const char *upload, size_t *upload_size)
{
    switch (req->state) {
    case REQ_BODY:
        if (*upload_size == 0)
            return start_batch(conn, req);
        if (buf_append(&req->body, upload, *upload_size) != FO_OK) {
            req->state = REQ_OVERSIZED;
            buf_free(&req->body);
        }
        *upload_size = 0;
        return MHD_YES;
    case REQ_OVERSIZED:
        if (*upload_size > 0) {
            req->discarded += *upload_size;
            *upload_size = 0;
            return req->discarded > FO_MAX_DISCARD ? MHD_NO : MHD_YES;
        }
        req->state = REQ_ANSWERED;
        metrics_batch(OUT_TOO_LARGE, 0);
        return respond_error(conn, req, MHD_HTTP_CONTENT_TOO_LARGE, "too_large", close_hdr,
                             "the body is larger than max_body_bytes (%ld)",
                             req->cfg->max_body_bytes);
    case REQ_RUNNING:
        return answer_batch(conn, req);
    case REQ_ANSWERED:
        *upload_size = 0;       /* the rest of a refused body is dropped */
        return MHD_YES;
    }
    return MHD_NO;
}

/* ---- the dispatcher -------------------------------------------------------- */

static struct request *request_new(struct MHD_Connection *conn)
{
    struct request *req = calloc(1, sizeof(*req));

    if (req == NULL)
        return NULL;
    req->conn = conn;
    req->cfg = server_config();
    req->arrival_us = fo_now_us();
    buf_init(&req->body, (size_t)req->cfg->max_body_bytes);
    access_request_id(conn, req->request_id, sizeof(req->request_id));
    access_client(conn, req->client, sizeof(req->client));
    return req;
}

static enum MHD_Result not_allowed(struct MHD_Connection *conn, const char *allow)
{
    const char *const hdrs[] = { MHD_HTTP_HEADER_ALLOW, allow, NULL };
    return respond_error(conn, NULL, MHD_HTTP_METHOD_NOT_ALLOWED, "method_not_allowed", hdrs,
                         "use %s", allow);
}

/* Marks a request for /healthz, /metrics or an error on its first call:
 * libmicrohttpd closes the connection when a response is queued in the
 * first call for a request, so every answer that can wait is given on the
 * second call, and keep-alive connections stay open. */
static char answer_next_call;

static enum MHD_Result route(struct MHD_Connection *conn, const char *url, const char *method)
{
    int get = strcmp(method, MHD_HTTP_METHOD_GET) == 0 || strcmp(method, MHD_HTTP_METHOD_HEAD) == 0;

    if (strcmp(url, "/healthz") == 0)
        return get ? serve_healthz(conn) : not_allowed(conn, "GET, HEAD");
    if (strcmp(url, "/metrics") == 0)
        return get ? serve_metrics(conn) : not_allowed(conn, "GET, HEAD");
    if (strcmp(url, "/batch") == 0)
        return not_allowed(conn, "POST");
    int show = strlen(url) < 200 && utf8_valid(url, strlen(url));
    return respond_error(conn, NULL, MHD_HTTP_NOT_FOUND, "not_found", NULL, "no such endpoint%s%s",
                         show ? ": " : "", show ? url : "");
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url,
                                  const char *method, const char *version, const char *upload,
                                  size_t *upload_size, void **con_cls)
{
    struct request *req = *con_cls;
    enum MHD_Result ret;
    (void)cls;
    (void)version;

    if (*con_cls == &answer_next_call) {
        if (*upload_size > 0) {
            *upload_size = 0;   /* a body sent to a GET endpoint is dropped */
            return MHD_YES;
        }
        return route(conn, url, method);
    }
    if (req != NULL)
        return handle_batch(conn, req, upload, upload_size);
    if (strcmp(url, "/batch") != 0 || strcmp(method, MHD_HTTP_METHOD_POST) != 0) {
        *con_cls = &answer_next_call;
        return MHD_YES;
    }
    if ((req = request_new(conn)) == NULL)
        return MHD_NO;
    *con_cls = req;
    if (refuse_early(conn, req, &ret)) {
        req->state = REQ_ANSWERED;
        return ret;
    }
    return MHD_YES;
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
    struct request *req = *con_cls;
    (void)cls;
    (void)conn;
    (void)toe;

    if (req == NULL || *con_cls == &answer_next_call) {
        *con_cls = NULL;
        return;
    }
    *con_cls = NULL;
    access_log(req->request_id, req->client, req->status, req->bytes, req->arrival_us,
               req->reject_status == 0 ? req->job : NULL);
    if (req->job != NULL) {
        pthread_mutex_lock(&srv.lock);
        srv.unsent--;
        pthread_cond_broadcast(&srv.changed);
        pthread_mutex_unlock(&srv.lock);
        job_unref(req->job);
    }
    buf_free(&req->body);
    config_unref(req->cfg);
    free(req);
}

/* Accept policy: max_connections, read from the current configuration so
 * that a reload changes it. (libmicrohttpd's own limit is split between its
 * threads and fixed at start.) Concurrent accepts in several front-end
 * threads may pass the limit by at most the number of those threads. */
static enum MHD_Result on_accept(void *cls, const struct sockaddr *addr, socklen_t addrlen)
{
    struct config *cfg = server_config();
    long max = cfg->max_connections;
    (void)cls;
    (void)addr;
    (void)addrlen;

    config_unref(cfg);
    if (atomic_load(&srv.connections) >= max) {
        log_debug("refusing a connection: %ld open (max_connections)", max);
        return MHD_NO;
    }
    return MHD_YES;
}

/* Counts connections and gives each the current client_timeout_ms. */
static void on_connection(void *cls, struct MHD_Connection *conn, void **socket_ctx,
                          enum MHD_ConnectionNotificationCode code)
{
    (void)cls;
    (void)socket_ctx;
    if (code == MHD_CONNECTION_NOTIFY_CLOSED) {
        atomic_fetch_sub(&srv.connections, 1);
        return;
    }
    atomic_fetch_add(&srv.connections, 1);
    struct config *cfg = server_config();
    unsigned timeout_s = (unsigned)((cfg->client_timeout_ms + 999) / 1000);
    config_unref(cfg);
    (void)MHD_set_connection_option(conn, MHD_CONNECTION_OPTION_TIMEOUT, timeout_s);
}

static void mhd_log(void *cls, const char *fmt, va_list ap)
{
    char line[512];
    (void)cls;
    (void)vsnprintf(line, sizeof(line), fmt, ap);
    line[strcspn(line, "\n")] = '\0';
    log_debug("libmicrohttpd: %s", line);
}

/* ---- lifecycle -------------------------------------------------------------- */

static unsigned front_threads(void)
{
    long n = sysconf(_SC_NPROCESSORS_ONLN);

    if (n < 1)
        n = 1;
    return (unsigned)(n > FO_FRONT_THREADS_MAX ? FO_FRONT_THREADS_MAX : n);
}

/* libmicrohttpd's own connection limit: as many as the descriptors allow,
 * so that on_accept (max_connections) is what limits. */
static unsigned connection_ceiling(void)
{
    struct rlimit rl;

    if (getrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur == RLIM_INFINITY || rl.rlim_cur > 1000000)
        return 1000000;
    return (unsigned)rl.rlim_cur;
}

/* "unix:/path" for a unix socket, else what listen_fd or `listen` is. */
static void describe_listener(const struct config *cfg, int listen_fd,
                              const struct sockaddr_storage *bound, char *out, size_t size)
{
    if (bound->ss_family == AF_UNIX)
        (void)snprintf(out, size, FO_UNIX_PREFIX "%s",
                       ((const struct sockaddr_un *)bound)->sun_path);
    else if (listen_fd >= 0)
        (void)snprintf(out, size, "the socket passed by systemd");
    else
        (void)snprintf(out, size, "%s%s", cfg->listen, cfg->reuse_port ? " (reuse_port)" : "");
}

fo_err server_start(struct config *cfg, int listen_fd)
{
    /* TURBO: libmicrohttpd skips a shutdown() per connection and reads
     * optimistically; fanoutd sets every socket option it needs itself. */
    unsigned flags = MHD_USE_EPOLL_INTERNAL_THREAD | MHD_ALLOW_SUSPEND_RESUME | MHD_USE_ERROR_LOG |
                     MHD_USE_TURBO;
    struct sockaddr_storage bound = cfg->listen_addr;
    socklen_t bound_len = cfg->listen_len;
    char name[160];
    fo_err err;

    server_reload(cfg);
    if (listen_fd >= 0) {
        /* Bound already (by systemd, or listen.c for a unix socket). */
        bound_len = sizeof(bound);
        if (getsockname(listen_fd, (struct sockaddr *)&bound, &bound_len) != 0) {
            log_error("the listening socket passed in is not usable: %s", strerror(errno));
            return FO_ESYS;
        }
    }
    describe_listener(cfg, listen_fd, &bound, name, sizeof(name));
    /* SO_REUSEPORT (with SO_REUSEADDR) for reuse_port; otherwise the option
     * is left out, since giving it as 0 would turn SO_REUSEADDR off too (and a
     * restart would then wait for TIME_WAIT connections to pass). */
    struct MHD_OptionItem reuse[] = {
        { MHD_OPTION_LISTENING_ADDRESS_REUSE, 1, NULL },
        { MHD_OPTION_END, 0, NULL },
    };
    if (listen_fd >= 0 || !cfg->reuse_port)
        reuse[0] = reuse[1];
    if ((err = fetch_env_init(&srv.env, (struct sockaddr *)&bound, bound_len)) != FO_OK) {
        log_error("cannot set up libcurl: %s", fo_strerror(err));
        return err;
    }
    srv.env_ready = 1;
    if ((err = watch_start()) != FO_OK)
        return err;
    srv.watch_ready = 1;
    if ((err = queue_start(cfg->workers, &srv.env)) != FO_OK) {
        log_error("cannot start %ld workers: %s", cfg->workers, fo_strerror(err));
        return err;
    }
    srv.queue_ready = 1;
    if (bound.ss_family == AF_INET6)
        flags |= MHD_USE_IPv6;
    srv.mhd = MHD_start_daemon(flags, 0, on_accept, NULL, on_request, NULL,
                               listen_fd >= 0 ? MHD_OPTION_LISTEN_SOCKET : MHD_OPTION_SOCK_ADDR,
                               listen_fd >= 0 ? (intptr_t)listen_fd : (intptr_t)&cfg->listen_addr,
                               MHD_OPTION_THREAD_POOL_SIZE, front_threads(),
                               MHD_OPTION_CONNECTION_LIMIT, connection_ceiling(),
                               MHD_OPTION_NOTIFY_COMPLETED, on_completed, NULL,
                               MHD_OPTION_NOTIFY_CONNECTION, on_connection, NULL,
                               MHD_OPTION_EXTERNAL_LOGGER, mhd_log, NULL,
                               MHD_OPTION_ARRAY, reuse,
                               MHD_OPTION_END);
    if (srv.mhd == NULL) {
        log_error("cannot listen on %s (in use%s, or not an address of this host?)", name,
                  cfg->reuse_port ? " without reuse_port or by another user" : "");
        return FO_ESYS;
    }
    atomic_store(&srv.listening, 1);
    log_info("listening on %s with %ld workers", name, cfg->workers);
    return FO_OK;
}

void server_stop_listening(int take_backlog)
{
    MHD_socket fd;
    unsigned taken = 0;

    if (srv.mhd == NULL || !atomic_exchange(&srv.listening, 0))
        return;
    fd = MHD_quiesce_daemon(srv.mhd);
    if (fd == MHD_INVALID_SOCKET) {
        log_warn("cannot stop listening early; the socket closes at exit");
        return;
    }
    /* Connections the kernel completed but nobody accepted yet would be
     * reset by close(): serve them instead. What still slips in between
     * the last accept and close() is what net.ipv4.tcp_migrate_req moves to
     * another socket of a SO_REUSEPORT group. */
    if (take_backlog && fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK) != 0)
        take_backlog = 0;       /* never block here: leave the backlog to the kernel */
    while (take_backlog && taken < FO_LISTEN_BACKLOG) {
        struct sockaddr_storage ss;
        socklen_t len = sizeof(ss);
        int c = accept4(fd, (struct sockaddr *)&ss, &len, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (c < 0)
            break;
        taken++;
        /* libmicrohttpd owns c from here, also when it refuses it */
        if (MHD_add_connection(srv.mhd, c, (struct sockaddr *)&ss, len) != MHD_YES)
            log_warn("a connection waiting to be accepted was dropped while leaving the port");
    }
    close(fd);
    if (take_backlog)
        log_info("left the listening socket; %u connections that were waiting are served", taken);
}

void server_drain(void)
{
    atomic_store(&srv.draining, 1);
    queue_close();
}

/* Waits until *counter is 0 or the time is up; 1 if it reached 0. */
static int wait_zero(long *counter, int64_t timeout_ms)
{
    int64_t end = fo_now_us() + timeout_ms * 1000;
    int zero;

    pthread_mutex_lock(&srv.lock);
    while (*counter > 0) {
        int64_t left = end - fo_now_us();
        if (left <= 0)
            break;
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        int64_t ns = ts.tv_nsec + (left % 1000000) * 1000;
        ts.tv_sec += (time_t)(left / 1000000 + ns / 1000000000);
        ts.tv_nsec = (long)(ns % 1000000000);
        pthread_cond_timedwait(&srv.changed, &srv.lock, &ts);
    }
    zero = *counter == 0;
    pthread_mutex_unlock(&srv.lock);
    return zero;
}

int server_wait_idle(int64_t timeout_ms)
{
    return wait_zero(&srv.in_flight, timeout_ms);
}

void server_cancel_all(void)
{
    size_t n = watch_finish_all(FINISH_SHUTDOWN);
    if (n > 0)
        log_warn("shutdown grace over: %zu batches answered with cancelled items", n);
}

void server_stop(void)
{
    /* Close the listening socket while libmicrohttpd's threads still run,
     * so that the window in which a new connection is reset is short. */
    server_stop_listening(0);
    if (!wait_zero(&srv.unsent, FO_DRAIN_FLUSH_MS))
        log_warn("some answers were not sent before shutdown");
    if (srv.queue_ready)
        queue_stop();
    if (srv.mhd != NULL)
        MHD_stop_daemon(srv.mhd);
    srv.mhd = NULL;
    if (srv.watch_ready)
        watch_stop();
    if (srv.env_ready)
        fetch_env_free(&srv.env);
    pthread_mutex_lock(&srv.lock);
    struct config *cfg = srv.cfg;
    srv.cfg = NULL;
    pthread_mutex_unlock(&srv.lock);
    config_unref(cfg);
}
