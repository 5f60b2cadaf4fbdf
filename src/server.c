/*
 * server.c - the libmicrohttpd front end: HTTP only (see server.h for the
 * request path). The daemon's lifecycle is daemon.c's.
 *
 * Threads: libmicrohttpd's own pool (epoll, one listener per thread) runs
 * the handler; it never waits for an upstream. The workers (queue.c) and
 * the watcher (watch.c) finish jobs and resume connections.
 *
 * Locking: srv.lock guards cfg, generation, in_flight, unsent, the list of
 * suspended requests and their resume fields; it is a leaf lock (nothing
 * else is locked while it is held).
 *
 * A suspended connection is resumed exactly once: by the job's on_finish
 * when its answer is ready, or by server_stop when the answer was still
 * being built at the end of the shutdown bound (the connection is then
 * closed unanswered, and the request is freed by whichever of on_completed
 * and on_finish comes last). libmicrohttpd aborts when it is stopped with a
 * connection still suspended, so server_stop resumes every one first.
 *
 * A streamed batch (Accept: application/x-ndjson) is not suspended while it
 * runs: its 200 goes out at once with a chunked content reader over the
 * job's stream sink (answer.h). When no line is ready the reader suspends
 * the connection itself (libmicrohttpd allows it from a content reader) and
 * the next line, heartbeat or the end resumes it; both happen under the
 * sink's lock, so they never cross. Every stream's job is finished before
 * the front end stops (shutdown cancels every watched batch), and a
 * finished stream never parks again, so none is left suspended.
 */
#include "server.h"

#include <errno.h>
#include <fcntl.h>
#include <microhttpd.h>
#include <setjmp.h>
#include <signal.h>
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
#include "answer.h"
#include "batch.h"
#include "buf.h"
#include "encode.h"
#include "http_strict.h"
#include "job.h"
#include "log.h"
#include "metrics.h"
#include "outcome.h"
#include "queue.h"
#include "trace.h"
#include "watch.h"

#define CT_JSON    "application/json"
#define CT_NDJSON  "application/x-ndjson"
#define CT_METRICS "text/plain; version=0.0.4; charset=utf-8"

/* REQ_OVERSIZED: the body passed max_body_bytes mid-upload; libmicrohttpd
 * cannot answer before the upload ends, so the rest is read and dropped
 * (up to FO_MAX_DISCARD bytes, then the connection is closed). */

enum req_state { REQ_BODY = 0, REQ_OVERSIZED, REQ_RUNNING, REQ_ANSWERED };

/* Per POST /batch connection request; owned by libmicrohttpd's con_cls
 * slot and freed in on_completed. */
struct request {
    enum req_state state;
    struct MHD_Connection *conn;
    char request_id[ACCESS_ID_SIZE]; /* the client's X-Request-Id, or generated */
    char client[ACCESS_CLIENT_SIZE]; /* "address:port", for the access log */
    unsigned status;                 /* of the answer, for the access log */
    size_t bytes;
    struct config *cfg; /* a reference: the config this batch uses */
    int64_t arrival_us;
    struct buf body;      /* capped at max_body_bytes */
    struct job *job;      /* a reference, once the batch is accepted */
    size_t discarded;     /* bytes dropped in REQ_OVERSIZED */
    int body_nomem;       /* REQ_OVERSIZED because memory ran out, not the cap */
    int rejected;         /* the queue refused the accepted batch: */
    enum refusal reject;  /* REFUSE_OVERLOADED or REFUSE_DRAINING */
    const char *log_word; /* a refusal's word for the access log */
    size_t sent;          /* answer bytes known written (read_answer) */
    /* Resuming; guarded by srv.lock. */
    struct request *sus_prev, *sus_next; /* in srv.suspended while suspended */
    int suspended;                       /* suspended, and nobody has resumed it yet */
    int forced;                          /* server_stop resumed it: close, unanswered */
    int job_done;                        /* on_finish has run */
    int orphan;                          /* on_completed ran first: on_finish frees it */
    /* Streaming and compression (contract v2). st is set once the stream
     * is started (read by the front end's thread and on_finish); completed
     * (srv.lock) once on_completed ran: fd may be closed from then on. */
    int want_stream;          /* Accept: application/x-ndjson first */
    int want_gzip;            /* Accept-Encoding allows gzip */
    struct answer_stream *st; /* the job's stream, or NULL: a document */
    int fd;                   /* the client's socket, for dropping it */
    int completed;
    enum MHD_RequestTerminationCode toe; /* how it ended, for on_finish's access line */
};

static struct server_state {
    pthread_mutex_t lock;   /* guards cfg ... drain_end_us (see the top) */
    pthread_cond_t changed; /* signalled when in_flight, unsent or resuming drop */
    struct config *cfg;
    unsigned long generation;
    long in_flight;            /* batches accepted whose answer is not ready */
    long unsent;               /* resumed batches whose answer is not sent */
    long resuming;             /* MHD_resume_connection calls under way */
    struct request *suspended; /* list of suspended batch requests */
    int64_t drain_end_us;      /* when the shutdown grace ends; 0: not draining */
    _Atomic int draining;
    _Atomic long connections; /* client connections open now */
    struct MHD_Daemon *mhd;
    _Atomic int listening; /* the listening socket is still open */
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

/*
 * A refusal, all of it from the outcome table (outcome.h): status, error
 * code, extra headers (extra, when given, instead of the row's), and for a
 * batch request (req != NULL) the metric and the access log's word.
 */
static enum MHD_Result respond_refusal(struct MHD_Connection *conn, struct request *req,
                                       enum refusal r, const char *const *extra, const char *fmt,
                                       ...) __attribute__((format(printf, 5, 6)));

static enum MHD_Result respond_refusal(struct MHD_Connection *conn, struct request *req,
                                       enum refusal r, const char *const *extra, const char *fmt,
                                       ...)
{
    const struct refusal_row *row = refusal_row(r);
    char text[FO_MSG_LEN];
    va_list ap;

    va_start(ap, fmt);
    (void)vsnprintf(text, sizeof(text), fmt, ap);
    va_end(ap);
    if (req != NULL) {
        if (row->metric >= 0)
            metrics_batch((enum batch_outcome)row->metric, 0);
        req->log_word = row->log_word;
    }
    return respond_error(conn, req, row->status, row->code, extra != NULL ? extra : row->headers,
                         "%s", text);
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
        return respond_refusal(conn, NULL, REFUSE_INTERNAL, NULL, "out of memory");
    }
    char *data = buf_steal(&b, &len);
    return respond(conn, NULL, MHD_HTTP_OK, CT_METRICS, data, len, NULL);
}

/* ---- strict HTTP and the request deadline (every request) ---------------- */

/* The strict HTTP rules themselves are http_strict.c's. */

/*
 * Per connection (libmicrohttpd's socket context), made in on_connection
 * and kept in a list that server_reap() walks: libmicrohttpd's own timeout
 * only counts idle time, so a request trickled a byte at a time would live
 * on. Each connection has a deadline for the request it is reading:
 *
 *   accepted, or the last request done   +2 * client_timeout_ms (the first
 *       byte may come up to one idle timeout later; it is not seen)
 *   its request line in (on_uri)         +client_timeout_ms
 *   the request whole (request_arrived)  none: the answer's time is the
 *       batch's, and a suspended connection is left alone
 *
 * Past it, the reaper shuts the socket down, and libmicrohttpd closes the
 * connection as for a client that went away.
 */
struct conn_ctx {
    struct conn_ctx *prev, *next; /* in conns.head, under conns.lock */
    int fd;
    _Atomic int64_t deadline_us; /* 0: none */
    int64_t start_us;            /* the current request's first byte (about) */
    int64_t timeout_us;          /* client_timeout_ms when accepted; 0: none */
    struct http_target target;   /* the current request's, from on_uri */
};

/* The connections with a conn_ctx. lock guards the list; an entry leaves it
 * (on_connection, CLOSED) before libmicrohttpd closes its descriptor, so the
 * reaper never shuts down a descriptor that has been reused. */
static struct {
    pthread_mutex_t lock;
    struct conn_ctx *head;
} conns = { .lock = PTHREAD_MUTEX_INITIALIZER };

static void conn_deadline(struct conn_ctx *cc, int64_t from_us, int64_t times)
{
    atomic_store(&cc->deadline_us, cc->timeout_us != 0 ? from_us + times * cc->timeout_us : 0);
}

void server_reap(void)
{
    int64_t now = fo_now_us();
    int n = 0;

    pthread_mutex_lock(&conns.lock);
    for (struct conn_ctx *cc = conns.head; cc != NULL; cc = cc->next) {
        int64_t deadline = atomic_load(&cc->deadline_us);
        if (deadline == 0 || now < deadline)
            continue;
        atomic_store(&cc->deadline_us, 0);
        (void)shutdown(cc->fd, SHUT_RDWR);
        n++;
    }
    pthread_mutex_unlock(&conns.lock);
    if (n > 0)
        log_debug("closed %d connections whose request did not arrive within client_timeout_ms",
                  n);
}

static struct conn_ctx *conn_ctx(struct MHD_Connection *conn)
{
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(conn, MHD_CONNECTION_INFO_SOCKET_CONTEXT);

    return ci != NULL ? ci->socket_context : NULL;
}

/* libmicrohttpd's idle timeout for the connection, rounded up to seconds
 * (its unit); 0 is none. */
static void set_idle_timeout(struct MHD_Connection *conn, int64_t us)
{
    (void)MHD_set_connection_option(conn, MHD_CONNECTION_OPTION_TIMEOUT,
                                    (unsigned int)((us + 999999) / 1000000));
}

/*
 * A request must arrive whole within client_timeout_ms of its first byte.
 * libmicrohttpd's timeout counts idle time (every byte restarts it), so it
 * is cut to what is left of the request's time each time part of the
 * request arrives: a body trickled a byte at a time is closed at most a
 * second after its deadline. Returns 1 when the deadline has passed.
 */
static int request_late(struct MHD_Connection *conn)
{
    struct conn_ctx *cc = conn_ctx(conn);
    int64_t left;

    if (cc == NULL || cc->timeout_us == 0)
        return 0;
    left = cc->start_us + cc->timeout_us - fo_now_us();
    if (left <= 0) {
        log_debug("closing a connection: the request did not arrive within client_timeout_ms");
        return 1;
    }
    set_idle_timeout(conn, left);
    return 0;
}

/* The request is in: the answer and the idle time after it get the whole
 * client_timeout_ms again. */
static void request_arrived(struct MHD_Connection *conn)
{
    struct conn_ctx *cc = conn_ctx(conn);

    if (cc == NULL)
        return;
    atomic_store(&cc->deadline_us, 0);
    set_idle_timeout(conn, cc->timeout_us);
}

/*
 * MHD_OPTION_URI_LOG_CALLBACK: the raw request target, before libmicrohttpd
 * splits and decodes it. Notes the time, and what http_strict needs to know
 * of the target.
 */
static void *on_uri(void *cls, const char *uri, struct MHD_Connection *conn)
{
    struct conn_ctx *cc = conn_ctx(conn);
    (void)cls;

    if (cc == NULL)
        return NULL;
    cc->start_us = fo_now_us();
    conn_deadline(cc, cc->start_us, 1);
    http_strict_target(&cc->target, uri);
    return NULL;
}

/* The checks every request passes before its body is read: answers (and
 * closes the connection) and returns 1 if the request is refused. req is the
 * batch request, or NULL on other paths. */
static int refuse_malformed(struct MHD_Connection *conn, struct request *req, const char *method,
                            const char *url, const char *version, enum MHD_Result *ret)
{
    struct conn_ctx *cc = conn_ctx(conn);
    const char *why;
    unsigned status;

    if (cc == NULL) {
        /* No connection state: on_connection ran out of memory. Not the
         * client's fault: 503, try again later. */
        *ret = respond_refusal(conn, req, REFUSE_OVERLOADED, NULL,
                               "fanoutd is out of memory; try again later");
        return 1;
    }
    status = http_strict_check(conn, &cc->target, method, url, version, &why);
    if (status == 0)
        return 0;
    *ret = respond_refusal(conn, req, refusal_of_malformed(status), NULL, "%s", why);
    return 1;
}

/* A body that a path other than POST /batch would have to read past
 * FO_MAX_OTHER_BODY (or of a size not known in advance). */
static int body_not_read(struct MHD_Connection *conn)
{
    const char *cl =
        MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);

    if (MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_TRANSFER_ENCODING) !=
        NULL)
        return 1;
    /* libmicrohttpd has checked that a Content-Length is all digits. */
    long long len;
    return cl != NULL && fo_parse_num(cl, 0, FO_MAX_OTHER_BODY, &len) == FO_ETOOBIG;
}

/* ---- POST /batch: the header checks -------------------------------------- */

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
        p += strcspn(p, ","); /* past any parameters to the next element */
    }
    return 0;
}

struct loop_check {
    const char *token; /* this deployment's CDN-Loop token */
    int looped;        /* a CDN-Loop header names it */
};

static enum MHD_Result find_cdn_loop(void *cls, enum MHD_ValueKind kind, const char *key,
                                     const char *value)
{
    struct loop_check *loop = cls;
    (void)kind;

    if (strcasecmp(key, "CDN-Loop") == 0 && value != NULL && cdn_loop_names(value, loop->token))
        loop->looped = 1;
    return MHD_YES;
}

/* Checks done as soon as the headers are in; answers and returns 1 if the
 * request is refused. */
static int refuse_early(struct MHD_Connection *conn, struct request *req, enum MHD_Result *ret)
{
    const struct config *cfg = req->cfg;
    const char *cl;
    struct loop_check loop = { .token = cfg->loop_token };

    (void)MHD_get_connection_values(conn, MHD_HEADER_KIND, find_cdn_loop, &loop);
    if (loop.looped) {
        *ret = respond_refusal(conn, req, REFUSE_LOOP, NULL,
                               "this batch came back to fanoutd through its own fetches "
                               "(CDN-Loop names '%s')",
                               cfg->loop_token);
        return 1;
    }

    if (atomic_load(&srv.draining)) {
        *ret = respond_refusal(conn, req, REFUSE_DRAINING, NULL, "fanoutd is shutting down");
        return 1;
    }
    if (!authorized(conn, cfg)) {
        *ret = respond_refusal(conn, req, REFUSE_UNAUTHORIZED, NULL,
                               "a valid 'Authorization: Bearer' token is required");
        return 1;
    }
    cl = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
    long long len;
    /* Past max_body_bytes, however long: refused before a byte is read. (One
     * that is not a number is libmicrohttpd's to refuse.) */
    if (cl != NULL && fo_parse_num(cl, 0, cfg->max_body_bytes, &len) == FO_ETOOBIG) {
        *ret = respond_refusal(conn, req, REFUSE_BODY_TOO_LARGE, NULL,
                               "the body is larger than max_body_bytes (%ld)",
                               cfg->max_body_bytes);
        return 1;
    }
    return 0;
}

/* ---- POST /batch: running it --------------------------------------------- */

/* Out of memory before the batch is accepted (nothing fetched yet) is a
 * passing overload: 503 overloaded, try again later. After, see answer_batch. */
static enum MHD_Result respond_out_of_memory(struct MHD_Connection *conn, struct request *req)
{
    return respond_refusal(conn, req, REFUSE_OVERLOADED, NULL,
                           "fanoutd is out of memory; try again later");
}

static void request_free(struct request *req);

/* Takes req off the suspended list and counts its answer as unsent: the
 * caller resumes it. srv.lock held. */
static void take_suspended(struct request *req)
{
    if (req->sus_prev != NULL)
        req->sus_prev->sus_next = req->sus_next;
    else
        srv.suspended = req->sus_next;
    if (req->sus_next != NULL)
        req->sus_next->sus_prev = req->sus_prev;
    req->sus_prev = req->sus_next = NULL;
    req->suspended = 0;
    srv.unsent++;
    srv.resuming++;
}

/* Resumes a connection taken with take_suspended; req may be gone after. */
static void resume(struct MHD_Connection *conn)
{
    MHD_resume_connection(conn);
    pthread_mutex_lock(&srv.lock);
    srv.resuming--;
    pthread_cond_broadcast(&srv.changed);
    pthread_mutex_unlock(&srv.lock);
}

static void log_access(struct request *req, enum MHD_RequestTerminationCode toe, int orphan);

/* on_finish of a stream: its lines are all written (the stream unparked its
 * reader), so only the bookkeeping is left; and a client dropped for not
 * reading (the unread lines passed max_answer_bytes) is cut off now rather
 * than at its idle timeout. The connection is not suspended (or only
 * parked by its reader), so nothing is resumed here. */
static void stream_finished(struct job *job, struct request *req)
{
    int drop = job_reason(job) == FINISH_CLIENT, orphan;

    if (drop && answer_stream_overflowed(req->st))
        METRIC_ADD(stream_drops, 1);
    watch_remove(job);
    pthread_mutex_lock(&srv.lock);
    srv.in_flight--;
    METRIC_SET(batches_in_flight, srv.in_flight);
    req->job_done = 1;
    orphan = req->orphan;
    /* The socket is closed only after on_completed, which sets completed
     * under this lock: until then the descriptor is the client's. */
    if (drop && !req->completed && req->fd >= 0)
        (void)shutdown(req->fd, SHUT_RDWR);
    pthread_cond_broadcast(&srv.changed);
    pthread_mutex_unlock(&srv.lock);
    if (orphan) {
        log_access(req, req->toe, 0); /* on_completed ran first and left these */
        request_free(req);
    }
}

/* Called once by whoever finishes the job, with its answer ready (or none:
 * client gone, rejected); resumes the client connection unless server_stop
 * already did. */
static void on_job_finish(struct job *job, void *ctx)
{
    struct request *req = ctx;
    struct MHD_Connection *conn = req->conn;
    int take, orphan;

    if (req->st != NULL) {
        stream_finished(job, req);
        return;
    }
    watch_remove(job);
    pthread_mutex_lock(&srv.lock);
    srv.in_flight--;
    METRIC_SET(batches_in_flight, srv.in_flight);
    req->job_done = 1;
    orphan = req->orphan;
    take = req->suspended;
    if (take)
        take_suspended(req);
    pthread_cond_broadcast(&srv.changed);
    pthread_mutex_unlock(&srv.lock);
    if (orphan)
        request_free(req); /* its connection closed unanswered meanwhile */
    else if (take)
        resume(conn); /* req belongs to libmicrohttpd's thread again */
}

struct cdn_loop {
    struct buf line; /* "CDN-Loop: a, b", capped */
    int failed;      /* over the cap or out of memory */
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
static fo_err collect_forward(struct MHD_Connection *conn, const struct request *req, char ***out,
                              size_t *nout)
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
            continue; /* taken above */
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

static enum MHD_Result start_stream(struct MHD_Connection *conn, struct request *req);

/* 1 if [p, p+n) is word, ignoring case and surrounding blanks. */
static int token_is(const char *p, size_t n, const char *word)
{
    while (n > 0 && (*p == ' ' || *p == '\t'))
        p++, n--;
    while (n > 0 && (p[n - 1] == ' ' || p[n - 1] == '\t'))
        n--;
    return n == strlen(word) && strncasecmp(p, word, n) == 0;
}

/* Accept asks for a stream: application/x-ndjson is the only or the first
 * listed media range (contract: q-values are not weighed). */
static int accepts_ndjson(const char *accept)
{
    if (accept == NULL)
        return 0;
    return token_is(accept, strcspn(accept, ",;"), CT_NDJSON);
}

/* The q-value of one Accept-Encoding element's parameters ("; q=0.5"):
 * 1000 times it (RFC 9110 allows three decimals); 1000 without q. */
static int qvalue(const char *p, const char *end)
{
    while (p < end) {
        p += strspn(p, " \t;");
        if (p + 1 < end && (*p == 'q' || *p == 'Q') && p[1] == '=') {
            int q = 0, scale = 1000;
            p += 2;
            if (p >= end || (*p != '0' && *p != '1'))
                return 0; /* not a qvalue (RFC 9110 12.4.2): not acceptable */
            q = (*p++ - '0') * 1000;
            if (p < end && *p == '.') {
                for (p++; p < end && *p >= '0' && *p <= '9' && scale > 1; p++) {
                    scale /= 10;
                    q += (*p - '0') * scale;
                }
            }
            p += strspn(p, " \t");
            if (q > 1000 || (p < end && *p != ';'))
                return 0; /* 1.5, or 0.5x: not a qvalue */
            return q;
        }
        p += strcspn(p, ";");
        if (p > end)
            break;
    }
    return 1000;
}

/* Accept-Encoding allows gzip: "gzip" (or "x-gzip") with a q-value above
 * 0, or, when gzip is not named, "*" above 0. "gzip;q=0" is a no. */
static int accepts_gzip(const char *ae)
{
    int gzip = -1, star = -1;

    while (ae != NULL && *ae != '\0') {
        size_t len = strcspn(ae, ",");
        const char *end = ae + len;
        size_t name = strcspn(ae, ";,");
        int q = qvalue(ae + name, end);
        if (token_is(ae, name, "gzip") || token_is(ae, name, "x-gzip"))
            gzip = gzip > q ? gzip : q;
        else if (token_is(ae, name, "*"))
            star = q;
        ae = *end == ',' ? end + 1 : end;
    }
    return gzip >= 0 ? gzip > 0 : star > 0;
}

/* v2 traceparent: the client's trace context (W3C), read once per batch. */
struct trace_in {
    const char *parent; /* the one traceparent, or NULL */
    int nparent;        /* traceparent headers seen: more than one is invalid */
    struct buf state;   /* "tracestate: a, b" (repeated headers joined) */
    int failed;
};

static enum MHD_Result collect_trace(void *cls, enum MHD_ValueKind kind, const char *key,
                                     const char *value)
{
    struct trace_in *t = cls;
    (void)kind;
    if (value == NULL)
        return MHD_YES;
    if (strcasecmp(key, "traceparent") == 0) {
        t->parent = value;
        t->nparent++;
    } else if (strcasecmp(key, "tracestate") == 0 && value[0] != '\0') {
        if (buf_puts(&t->state, t->state.len ? "," : "tracestate: ") != FO_OK ||
            buf_puts(&t->state, value) != FO_OK)
            t->failed = 1;
    }
    return MHD_YES;
}

/* Sets b's traceparent and tracestate from the request (a malformed
 * traceparent: neither); FO_ENOMEM. A tracestate past FO_MAX_HEADER_LEN
 * is dropped, as W3C allows. */
static fo_err trace_context(struct MHD_Connection *conn, struct batch_req *b)
{
    struct trace_in t = { .parent = NULL };

    buf_init(&t.state, 0);
    (void)MHD_get_connection_values(conn, MHD_HEADER_KIND, collect_trace, &t);
    if (t.failed) {
        buf_free(&t.state);
        return FO_ENOMEM;
    }
    if (t.nparent == 1 && trace_parse(t.parent, b->traceparent) && t.state.len > 0 &&
        t.state.len <= FO_MAX_HEADER_LEN && strpbrk(t.state.data, "\r\n") == NULL)
        b->tracestate = buf_steal(&t.state, NULL); /* NUL-terminated */
    buf_free(&t.state);
    return FO_OK;
}

/* Watches the job's client (fd) for leaving, and queues its items. Not
 * queued (full, or draining): the error, with req marked for the 503 that
 * the caller's job_finish(FINISH_REJECTED) leads to. */
static fo_err watch_and_queue(struct request *req, int fd)
{
    fo_err err;

    if (watch_add(req->job, fd) != FO_OK)
        log_warn("batch %llu: not watched (out of memory)",
                 (unsigned long long)job_serial(req->job));
    err = queue_push(req->job, req->cfg->queue_capacity);
    if (err != FO_OK) {
        req->rejected = 1;
        req->reject = err == FO_EFULL ? REFUSE_OVERLOADED : REFUSE_DRAINING;
    }
    return err;
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
    req->want_stream = accepts_ndjson(
        MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_ACCEPT));
    req->want_gzip = accepts_gzip(
        MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_ACCEPT_ENCODING));
    ctype = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_TYPE);
    err = batch_parse(req->body.data ? req->body.data : "", req->body.len,
                      batch_is_json_type(ctype), req->cfg, &parsed, &msg);
    buf_free(&req->body);
    if (err == FO_ETOOBIG) {
        return respond_refusal(conn, req, REFUSE_BATCH_TOO_LARGE, NULL, "%s", msg.text);
    }
    if (err == FO_ENOMEM)
        return respond_out_of_memory(conn, req);
    if (err != FO_OK) {
        return respond_refusal(conn, req, REFUSE_BAD_BATCH, NULL, "%s", msg.text);
    }
    if (req->want_stream && parsed.merge != MERGE_NONE) {
        batch_req_free(&parsed);
        return respond_refusal(conn, req, REFUSE_BAD_BATCH, NULL,
                               "merge other than \"none\" cannot be streamed "
                               "(Accept: application/x-ndjson): a merged document needs the "
                               "whole batch");
    }
    if (trace_context(conn, &parsed) != FO_OK ||
        collect_forward(conn, req, &fwd, &nfwd) != FO_OK) {
        batch_req_free(&parsed);
        return respond_out_of_memory(conn, req);
    }
    if (job_new(req->cfg, &parsed, fwd, nfwd, req->arrival_us, on_job_finish, req, &req->job) !=
        FO_OK)
        return respond_out_of_memory(conn, req); /* job_new freed parsed and fwd */
    if (req->want_stream)
        return start_stream(conn, req);
    req->state = REQ_RUNNING;

    /* Suspend first: from here on any thread may finish the job and resume. */
    MHD_suspend_connection(conn);
    pthread_mutex_lock(&srv.lock);
    srv.in_flight++;
    METRIC_SET(batches_in_flight, srv.in_flight);
    req->suspended = 1;
    req->sus_next = srv.suspended;
    if (srv.suspended != NULL)
        srv.suspended->sus_prev = req;
    srv.suspended = req;
    pthread_mutex_unlock(&srv.lock);
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CONNECTION_FD);
    if (watch_and_queue(req, ci ? ci->connect_fd : -1) != FO_OK) {
        job_finish(req->job, FINISH_REJECTED);
    }
    return MHD_YES;
}

/* The answer's bytes, copied out of the job's document as libmicrohttpd
 * asks for them. It asks for pos once every byte before it was written to
 * the socket, so req->sent is what the client was sent at least (for the
 * access log of an answer cut short). */
static ssize_t read_answer(void *cls, uint64_t pos, char *out, size_t max)
{
    struct request *req = cls;
    struct answer_sink *sink = job_answer_sink(req->job);
    ssize_t n = sink->ops->read(sink, pos, out, max);

    if (n == ANSWER_END)
        return MHD_CONTENT_READER_END_OF_STREAM;
    req->sent = (size_t)pos;
    return n;
}

/* A gzip document's reader: the compressor, owned by the response (freed
 * with it, which may come before or after on_completed: so it never
 * touches req there); req is only used while the response is read. */
struct gzip_reader {
    struct answer_gzip gz;
    struct request *req;
};

/* The document compressed as libmicrohttpd asks for it (Accept-Encoding: gzip). */
static ssize_t read_gzip(void *cls, uint64_t pos, char *out, size_t max)
{
    struct gzip_reader *r = cls;
    ssize_t n = answer_gzip_read(&r->gz, out, max);

    if (n == ANSWER_END)
        return MHD_CONTENT_READER_END_OF_STREAM;
    if (n < 0)
        return MHD_CONTENT_READER_END_WITH_ERROR;
    r->req->sent = r->req->bytes = (size_t)pos + (size_t)n;
    return n;
}

static void free_gzip(void *cls)
{
    struct gzip_reader *r = cls;

    answer_gzip_free(&r->gz);
    free(r);
}

/* Queues a 200 answer: its Content-Type, the gzip headers when it is
 * compressed, X-Batch-Complete for a document (complete >= 0; a stream says
 * it in its summary line instead), X-Request-Id. Takes resp. */
static enum MHD_Result queue_ok(struct MHD_Connection *conn, struct request *req,
                                struct MHD_Response *resp, const char *ctype, int gzip,
                                int complete)
{
    enum MHD_Result ret;

    (void)MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, ctype);
    if (gzip) {
        (void)MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_ENCODING, "gzip");
        (void)MHD_add_response_header(resp, MHD_HTTP_HEADER_VARY, "Accept-Encoding");
    }
    if (complete >= 0)
        (void)MHD_add_response_header(resp, "X-Batch-Complete", complete ? "true" : "false");
    (void)MHD_add_response_header(resp, "X-Request-Id", req->request_id);
    req->status = MHD_HTTP_OK;
    ret = MHD_queue_response(conn, MHD_HTTP_OK, resp);
    MHD_destroy_response(resp);
    return ret;
}

/* 200 with the job's document gzip-compressed block by block as it is sent
 * (chunked: its compressed size is not known up front). Out of memory for
 * the compressor: 500, as for a document that could not be built. */
static enum MHD_Result respond_doc_gzip(struct MHD_Connection *conn, struct request *req,
                                        struct answer_sink *sink)
{
    struct job *job = req->job;
    struct gzip_reader *r = malloc(sizeof(*r));
    struct MHD_Response *resp;

    if (r == NULL || answer_gzip_init(&r->gz, sink) != FO_OK) {
        free(r);
        return respond_refusal(conn, req, REFUSE_ANSWER_FAILED, NULL,
                               "out of memory while compressing the answer of %zu items",
                               job_items(job));
    }
    r->req = req;
    resp = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, FO_STREAM_BLOCK, read_gzip, r,
                                             free_gzip);
    if (resp == NULL) {
        free_gzip(r);
        return MHD_NO;
    }
    return queue_ok(conn, req, resp, CT_JSON, 1, job_complete(job));
}

/* 200 with the job's document, read out of it as it is sent (the
 * document lives until on_completed drops the job). */
static enum MHD_Result respond_doc(struct MHD_Connection *conn, struct request *req)
{
    struct job *job = req->job;
    struct MHD_Response *resp;
    struct answer_sink *sink = job_answer_sink(job);
    uint64_t size = sink->ops->size(sink);

    if (req->want_gzip)
        return respond_doc_gzip(conn, req, sink);
    /* libmicrohttpd allocates the block with the response: no larger than
     * the document (a small answer then costs no mapping of its own). */
    size_t block = size != ANSWER_SIZE_UNKNOWN && size < FO_ANSWER_BLOCK
                       ? (size < FO_STREAM_BLOCK ? FO_STREAM_BLOCK : (size_t)size)
                       : FO_ANSWER_BLOCK;
    resp = MHD_create_response_from_callback(
        size == ANSWER_SIZE_UNKNOWN ? MHD_SIZE_UNKNOWN : size, block, read_answer, req, NULL);
    if (resp == NULL)
        return MHD_NO;
    req->bytes = size == ANSWER_SIZE_UNKNOWN ? 0 : (size_t)size;
    return queue_ok(conn, req, resp, CT_JSON, 0, job_complete(job));
}

/* ---- POST /batch: streaming (NDJSON) ----------------------------------------- */

/* The stream's park and unpark (answer.h): the reader found nothing to send
 * and suspends the connection; a new line resumes it. Both are called
 * under the stream's lock, so a resume never comes before its suspend. */
static void stream_park(void *ctx)
{
    MHD_suspend_connection(ctx);
}

static void stream_unpark(void *ctx)
{
    MHD_resume_connection(ctx);
}

/* The stream's bytes as they are written; never waits: with nothing to
 * send it parks the connection and returns 0. */
static ssize_t read_stream(void *cls, uint64_t pos, char *out, size_t max)
{
    struct request *req = cls;
    struct answer_sink *sink = &req->st->sink;
    ssize_t n = sink->ops->read(sink, pos, out, max);

    if (n == ANSWER_END)
        return MHD_CONTENT_READER_END_OF_STREAM;
    if (n == ANSWER_BROKEN)
        return MHD_CONTENT_READER_END_WITH_ERROR; /* the client sees no final chunk */
    req->sent = req->bytes = (size_t)pos + (size_t)n;
    return n;
}

/*
 * An accepted batch answered as a stream: 200 and the headers go out now
 * (the connection is not suspended: its reader parks it while no line is
 * ready); every line follows as its item finishes. The job is watched for
 * its deadline and for a client that goes away, as any batch. A batch the
 * queue refuses is answered 503 as in v1.
 */
static enum MHD_Result start_stream(struct MHD_Connection *conn, struct request *req)
{
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CONNECTION_FD);
    struct MHD_Response *resp;
    struct answer_stream *st;

    if (job_set_stream(req->job, req->want_gzip, &st) != FO_OK) {
        job_unref(req->job);
        req->job = NULL;
        return respond_out_of_memory(conn, req);
    }
    resp = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, FO_STREAM_BLOCK, read_stream, req,
                                             NULL);
    if (resp == NULL) {
        job_unref(req->job);
        req->job = NULL;
        return respond_out_of_memory(conn, req);
    }
    req->st = st;
    req->fd = ci ? ci->connect_fd : -1;
    req->state = REQ_ANSWERED;
    answer_stream_set_waker(st, stream_park, stream_unpark, conn);
    pthread_mutex_lock(&srv.lock);
    srv.in_flight++;
    srv.unsent++; /* on_completed counts it sent */
    METRIC_SET(batches_in_flight, srv.in_flight);
    pthread_mutex_unlock(&srv.lock);
    if (watch_and_queue(req, req->fd) != FO_OK) {
        /* Finished at once on this thread (on_finish included): 503. */
        answer_stream_set_waker(st, NULL, NULL, NULL);
        job_finish(req->job, FINISH_REJECTED);
        MHD_destroy_response(resp);
        return respond_refusal(conn, req, req->reject, NULL,
                               req->reject == REFUSE_OVERLOADED
                                   ? "the batch of %zu items does not fit in the work queue"
                                   : "fanoutd is shutting down (batch of %zu items)",
                               job_items(req->job));
    }
    METRIC_ADD(streams, 1);
    return queue_ok(conn, req, resp, CT_NDJSON, req->want_gzip, -1);
}

/* The connection was resumed: the job has finished, or shutdown cut it. */
static enum MHD_Result answer_batch(struct MHD_Connection *conn, struct request *req)
{
    struct job *job = req->job;
    struct answer_sink *sink;
    int forced;

    req->state = REQ_ANSWERED;
    pthread_mutex_lock(&srv.lock);
    forced = req->forced;
    pthread_mutex_unlock(&srv.lock);
    if (forced)
        return MHD_NO; /* its answer is still being built: close */
    if (req->rejected) {
        return respond_refusal(conn, req, req->reject, NULL,
                               req->reject == REFUSE_OVERLOADED
                                   ? "the batch of %zu items does not fit in the work queue"
                                   : "fanoutd is shutting down (batch of %zu items)",
                               job_items(job));
    }
    if ((sink = job_answer_sink(job)) == NULL)
        return MHD_NO; /* nobody to answer: close the connection */
    if (sink->ops->failed(sink)) {
        /* The items were fetched: a retry would fetch them again, so this
         * is not "overloaded, try again" (no Retry-After). */
        return respond_refusal(conn, req, REFUSE_ANSWER_FAILED, NULL,
                               "out of memory while building the answer of %zu items",
                               job_items(job));
    }
    return respond_doc(conn, req);
}

static enum MHD_Result handle_batch(struct MHD_Connection *conn, struct request *req,
                                    const char *upload, size_t *upload_size)
{
    switch (req->state) {
    case REQ_BODY:
        if (*upload_size == 0) {
            request_arrived(conn);
            return start_batch(conn, req);
        }
        if (request_late(conn))
            return MHD_NO;
        fo_err err = buf_append(&req->body, upload, *upload_size);
        if (err != FO_OK) {
            req->state = REQ_OVERSIZED;
            req->body_nomem = err == FO_ENOMEM;
            buf_free(&req->body);
        }
        *upload_size = 0;
        return MHD_YES;
    case REQ_OVERSIZED:
        if (*upload_size > 0) {
            if (request_late(conn))
                return MHD_NO;
            req->discarded += *upload_size;
            *upload_size = 0;
            return req->discarded > FO_MAX_DISCARD ? MHD_NO : MHD_YES;
        }
        req->state = REQ_ANSWERED;
        if (req->body_nomem)
            return respond_out_of_memory(conn, req); /* not the client's fault: 503 */
        return respond_refusal(conn, req, REFUSE_BODY_TOO_LARGE, NULL,
                               "the body is larger than max_body_bytes (%ld)",
                               req->cfg->max_body_bytes);
    case REQ_RUNNING:
        return answer_batch(conn, req);
    case REQ_ANSWERED:
        *upload_size = 0; /* the rest of a refused body is dropped */
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
    return respond_refusal(conn, NULL, REFUSE_METHOD, hdrs, "use %s", allow);
}

/* Marks a request for /healthz, /metrics or an error on its first call:
 * libmicrohttpd closes the connection when a response is queued in the
 * first call for a request, so every answer that can wait is given on the
 * second call, and keep-alive connections stay open. */
static char answer_next_call;

static enum MHD_Result route(struct MHD_Connection *conn, const char *url, const char *method)
{
    int get = strcmp(method, MHD_HTTP_METHOD_GET) == 0 ||
              strcmp(method, MHD_HTTP_METHOD_HEAD) == 0;

    if (strcmp(url, "/healthz") == 0)
        return get ? serve_healthz(conn) : not_allowed(conn, "GET, HEAD");
    if (strcmp(url, "/metrics") == 0)
        return get ? serve_metrics(conn) : not_allowed(conn, "GET, HEAD");
    if (strcmp(url, "/batch") == 0)
        return not_allowed(conn, "POST");
    int show = strlen(url) < 200 && utf8_valid(url, strlen(url));
    return respond_refusal(conn, NULL, REFUSE_NOT_FOUND, NULL, "no such endpoint%s%s",
                           show ? ": " : "", show ? url : "");
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url,
                                  const char *method, const char *version, const char *upload,
                                  size_t *upload_size, void **con_cls)
{
    struct request *req = *con_cls;
    enum MHD_Result ret;
    (void)cls;

    if (*con_cls == &answer_next_call) {
        if (*upload_size > 0) {
            *upload_size = 0; /* a body sent to a GET endpoint is dropped */
            return request_late(conn) ? MHD_NO : MHD_YES;
        }
        request_arrived(conn);
        return route(conn, url, method);
    }
    if (req != NULL)
        return handle_batch(conn, req, upload, upload_size);
    if (request_late(conn))
        return MHD_NO;
    if (strcmp(url, "/batch") != 0 || strcmp(method, MHD_HTTP_METHOD_POST) != 0) {
        if (refuse_malformed(conn, NULL, method, url, version, &ret))
            return ret;
        if (body_not_read(conn))
            return route(conn, url, method); /* answered now: the connection closes */
        *con_cls = &answer_next_call;
        return MHD_YES;
    }
    if ((req = request_new(conn)) == NULL)
        return MHD_NO;
    *con_cls = req;
    if (refuse_malformed(conn, req, method, url, version, &ret) || refuse_early(conn, req, &ret)) {
        req->state = REQ_ANSWERED;
        return ret;
    }
    return MHD_YES;
}

static void request_free(struct request *req)
{
    buf_free(&req->body);
    config_unref(req->cfg);
    free(req);
}

/* The access line: what was sent (all of it, or what had been written when
 * the client went away or shutdown closed the connection) and how it
 * ended. */
static void log_access(struct request *req, enum MHD_RequestTerminationCode toe, int orphan)
{
    const struct job *job = !req->rejected && !orphan ? req->job : NULL;
    const char *outcome = job == NULL ? req->log_word : NULL;
    size_t bytes = req->bytes;

    if (toe != MHD_REQUEST_TERMINATED_COMPLETED_OK) {
        bytes = req->sent;
        if (req->status != 0) /* an answer was under way */
            outcome = toe == MHD_REQUEST_TERMINATED_DAEMON_SHUTDOWN ? "shutdown" : "client_gone";
    }
    if (orphan)
        outcome = "shutdown";
    access_log(req->request_id, req->client, req->status, bytes, req->arrival_us, job, outcome);
}

/*
 * A stream's connection ends (all sent, client gone, dropped): its reader is
 * gone, and a batch still running is cancelled as for a client that went
 * away. A stream's end can be sent before the job's on_finish has run (the
 * lines are written first), so the access line, which reads the job's
 * outcome, and freeing req are left to on_finish when it has not run yet.
 */
static void stream_completed(struct request *req, enum MHD_RequestTerminationCode toe)
{
    struct job *job = req->job;
    int orphan;

    answer_stream_set_waker(req->st, NULL, NULL, NULL);
    /* libmicrohttpd closes the socket after this returns: the watcher lets
     * go of it now (its descriptor could be reused at once), not in
     * on_finish, which may come later on another thread. */
    watch_remove(job);
    pthread_mutex_lock(&srv.lock);
    req->completed = 1;
    pthread_mutex_unlock(&srv.lock);
    if (!job_stopped(job)) {
        job_withdraw(job);
        (void)job_finish(job, FINISH_CLIENT);
    }
    pthread_mutex_lock(&srv.lock);
    srv.unsent--;
    req->toe = toe;
    orphan = req->orphan = !req->job_done;
    pthread_cond_broadcast(&srv.changed);
    pthread_mutex_unlock(&srv.lock);
    if (!orphan) {
        log_access(req, toe, 0);
        request_free(req);
    }
    job_unref(job); /* on_finish's caller holds its own reference */
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
    struct request *req = *con_cls;
    struct conn_ctx *cc = conn_ctx(conn);
    int orphan = 0;
    (void)cls;

    if (cc != NULL)
        conn_deadline(cc, fo_now_us(), 2); /* for the next request on the connection */

    if (req == NULL || *con_cls == &answer_next_call) {
        *con_cls = NULL;
        return;
    }
    *con_cls = NULL;
    if (req->st != NULL) {
        stream_completed(req, toe);
        return;
    }
    if (req->job != NULL) {
        pthread_mutex_lock(&srv.lock);
        srv.unsent--;
        /* Resumed by server_stop with its answer still being built: the
         * job's on_finish will free req. */
        orphan = req->orphan = !req->job_done;
        pthread_cond_broadcast(&srv.changed);
        pthread_mutex_unlock(&srv.lock);
    }
    log_access(req, toe, orphan);
    if (req->job != NULL)
        job_unref(req->job); /* on_finish's caller holds its own reference */
    if (!orphan)
        request_free(req);
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

/* Counts connections and gives each the current client_timeout_ms and its
 * struct conn_ctx (without one, out of memory, its requests are refused). */
static void on_connection(void *cls, struct MHD_Connection *conn, void **socket_ctx,
                          enum MHD_ConnectionNotificationCode code)
{
    struct conn_ctx *cc;
    (void)cls;

    if (code == MHD_CONNECTION_NOTIFY_CLOSED) {
        if ((cc = *socket_ctx) != NULL) {
            pthread_mutex_lock(&conns.lock);
            if (cc->prev != NULL)
                cc->prev->next = cc->next;
            else
                conns.head = cc->next;
            if (cc->next != NULL)
                cc->next->prev = cc->prev;
            pthread_mutex_unlock(&conns.lock);
            FO_FREE(*socket_ctx);
        }
        atomic_fetch_sub(&srv.connections, 1);
        return;
    }
    atomic_fetch_add(&srv.connections, 1);
    struct config *cfg = server_config();
    int64_t timeout_us = (int64_t)cfg->client_timeout_ms * 1000;
    config_unref(cfg);
    set_idle_timeout(conn, timeout_us);
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CONNECTION_FD);
    if (ci == NULL || (cc = calloc(1, sizeof(*cc))) == NULL)
        return;
    cc->fd = ci->connect_fd;
    cc->timeout_us = timeout_us;
    conn_deadline(cc, fo_now_us(), 2);
    pthread_mutex_lock(&conns.lock);
    cc->next = conns.head;
    if (conns.head != NULL)
        conns.head->prev = cc;
    conns.head = cc;
    pthread_mutex_unlock(&conns.lock);
    *socket_ctx = cc;
}

/* MHD_OPTION_UNESCAPE_CALLBACK: the target is routed as sent. libmicrohttpd
 * would decode "%00" into a NUL that ends the path early. */
static size_t no_unescape(void *cls, struct MHD_Connection *conn, char *s)
{
    (void)cls;
    (void)conn;
    return strlen(s);
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

    if (getrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur == RLIM_INFINITY ||
        rl.rlim_cur > 1000000)
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

fo_err server_listen_address(const struct config *cfg, int listen_fd,
                             struct sockaddr_storage *bound, socklen_t *bound_len)
{
    *bound = cfg->listen_addr;
    *bound_len = cfg->listen_len;
    if (listen_fd >= 0) {
        /* Bound already (by systemd, or listen.c for a unix socket). */
        *bound_len = sizeof(*bound);
        if (getsockname(listen_fd, (struct sockaddr *)bound, bound_len) != 0) {
            log_error("the listening socket passed in is not usable: %s", strerror(errno));
            return FO_ESYS;
        }
    }
    return FO_OK;
}

/*
 * MHD_quiesce_daemon races with the library's own worker threads (0.9.75 and
 * 1.0.1 alike): for each worker of the pool it sets was_quiesced and then
 * removes the listening socket from that worker's epoll set, but a worker
 * that wakes in between removes it first (its own path tolerates ENOENT,
 * the quiesce path does not), and the library panics: "Failed to remove
 * listen FD from epoll set", killing the daemon as it starts to drain. The
 * panic handler below turns that one panic, on the thread that is
 * quiescing, into a jump back to quiesce_retrying, which calls it again: the
 * workers already done are skipped (their socket is out of their set), and
 * nothing is locked inside that loop. Any other panic aborts, as the
 * library's own handler does.
 */
static _Thread_local sigjmp_buf *quiesce_jmp; /* set only around the call, on its thread */

static void mhd_panic(void *cls, const char *file, unsigned int line, const char *reason)
{
    (void)cls;
    if (quiesce_jmp != NULL &&
        (reason == NULL || strstr(reason, "remove listen FD from epoll") != NULL))
        siglongjmp(*quiesce_jmp, 1);
    fprintf(stderr, "fanoutd: fatal error in libmicrohttpd %s:%u: %s", file != NULL ? file : "?",
            line, reason != NULL ? reason : "(no message)\n");
    abort();
}

static MHD_socket quiesce_retrying(struct MHD_Daemon *d)
{
    sigjmp_buf jmp;
    volatile int tries = 0;
    MHD_socket fd = MHD_INVALID_SOCKET;

    if (sigsetjmp(jmp, 0) != 0) {
        quiesce_jmp = NULL;
        if (++tries >= 100) {
            log_error("libmicrohttpd kept failing to stop listening; stopping hard");
            abort();
        }
        (void)usleep(1000); /* let the worker that won finish its own removal */
    }
    quiesce_jmp = &jmp;
    fd = MHD_quiesce_daemon(d);
    quiesce_jmp = NULL;
    if (tries > 0)
        log_debug("stopped listening after %d lost races with libmicrohttpd's workers", tries);
    return fd;
}

fo_err server_start(struct config *cfg, int listen_fd)
{
    /* TURBO: libmicrohttpd skips a shutdown() per connection and reads
     * optimistically; fanoutd sets every socket option it needs itself. */
    unsigned flags = MHD_USE_EPOLL_INTERNAL_THREAD | MHD_ALLOW_SUSPEND_RESUME |
                     MHD_USE_ERROR_LOG | MHD_USE_TURBO;
    struct sockaddr_storage bound;
    socklen_t bound_len;
    char name[160];
    fo_err err;

    server_reload(cfg);
    log_info("strict HTTP: %s", http_strict_init());
    MHD_set_panic_func(mhd_panic, NULL);
    if ((err = server_listen_address(cfg, listen_fd, &bound, &bound_len)) != FO_OK)
        return err;
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
    if (bound.ss_family == AF_INET6)
        flags |= MHD_USE_IPv6;
    srv.mhd = MHD_start_daemon(
        flags, 0, on_accept, NULL, on_request, NULL,
        listen_fd >= 0 ? MHD_OPTION_LISTEN_SOCKET : MHD_OPTION_SOCK_ADDR,
        listen_fd >= 0 ? (intptr_t)listen_fd : (intptr_t)&cfg->listen_addr,
        MHD_OPTION_THREAD_POOL_SIZE, front_threads(), MHD_OPTION_CONNECTION_LIMIT,
        connection_ceiling(), MHD_OPTION_NOTIFY_COMPLETED, on_completed, NULL,
        MHD_OPTION_NOTIFY_CONNECTION, on_connection, NULL, MHD_OPTION_URI_LOG_CALLBACK, on_uri,
        NULL, MHD_OPTION_UNESCAPE_CALLBACK, no_unescape, NULL, MHD_OPTION_EXTERNAL_LOGGER,
        mhd_log, NULL, MHD_OPTION_ARRAY, reuse, MHD_OPTION_ARRAY, http_strict_options(),
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
    fd = quiesce_retrying(srv.mhd);
    if (fd == MHD_INVALID_SOCKET) {
        log_warn("cannot stop listening early; the socket closes at exit");
        return;
    }
    /* Connections the kernel completed but nobody accepted yet would be
     * reset by close(): serve them instead. What still slips in between
     * the last accept and close() is what net.ipv4.tcp_migrate_req moves to
     * another socket of a SO_REUSEPORT group. */
    if (take_backlog && fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK) != 0)
        take_backlog = 0; /* never block here: leave the backlog to the kernel */
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
    struct config *cfg = server_config();

    pthread_mutex_lock(&srv.lock);
    srv.drain_end_us = fo_now_us() + (int64_t)cfg->shutdown_grace_ms * 1000;
    pthread_mutex_unlock(&srv.lock);
    config_unref(cfg);
    atomic_store(&srv.draining, 1);
}

/* Waits until *counter is 0 or the monotonic time end (us); 1 if it reached 0. */
static int wait_zero_until(long *counter, int64_t end)
{
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
    return wait_zero_until(&srv.in_flight, fo_now_us() + timeout_ms * 1000);
}

void server_cut_grace(void)
{
    int64_t now = fo_now_us();

    /* Called before the grace is over with batches in flight: a second stop
     * signal cut the grace short, so answers get only the final flush. */
    pthread_mutex_lock(&srv.lock);
    if (srv.in_flight > 0 && now < srv.drain_end_us)
        srv.drain_end_us = now;
    pthread_mutex_unlock(&srv.lock);
}

static int64_t min64(int64_t a, int64_t b)
{
    return a < b ? a : b;
}

/* 1 if a stop signal is pending: main took the first one (every thread
 * blocks them), so this is another, and waiting is cut short. */
static int stop_signal_pending(void)
{
    sigset_t set;

    return sigpending(&set) == 0 &&
           (sigismember(&set, SIGTERM) == 1 || sigismember(&set, SIGINT) == 1);
}

/* Resumes every connection still suspended (its answer still being built):
 * it is closed unanswered. */
static void resume_all(void)
{
    for (;;) {
        pthread_mutex_lock(&srv.lock);
        struct request *req = srv.suspended;
        struct MHD_Connection *conn = req ? req->conn : NULL;
        unsigned long long serial = req ? job_serial(req->job) : 0;
        if (req != NULL) {
            req->forced = 1;
            take_suspended(req);
        }
        pthread_mutex_unlock(&srv.lock);
        if (req == NULL)
            return;
        log_warn(
            "shutdown: the answer of batch %llu was still being built; closing its connection",
            serial);
        resume(conn);
    }
}

void server_flush(void)
{
    int64_t end;

    /* Answers get what is left of the shutdown grace, and at least
     * FO_DRAIN_FLUSH_MS after it: first to be built, then to be sent. */
    pthread_mutex_lock(&srv.lock);
    end = srv.drain_end_us;
    pthread_mutex_unlock(&srv.lock);
    if (end < fo_now_us() + FO_DRAIN_FLUSH_MS * 1000)
        end = fo_now_us() + FO_DRAIN_FLUSH_MS * 1000;
    /* Close the listening socket while libmicrohttpd's threads still run,
     * so that the window in which a new connection is reset is short. */
    server_stop_listening(0);
    (void)wait_zero_until(&srv.in_flight, end);
    resume_all();
    while (!wait_zero_until(&srv.unsent, min64(end, fo_now_us() + FO_STOP_POLL_MS * 1000))) {
        if (fo_now_us() >= end) {
            log_warn("some answers were not sent before shutdown");
            break;
        }
        if (stop_signal_pending()) {
            log_warn("another stop signal: not waiting for answers still being sent");
            break;
        }
    }
    /* No resume may be under way when libmicrohttpd stops (each is short). */
    (void)wait_zero_until(&srv.resuming, INT64_MAX);
}

void server_stop(void)
{
    if (srv.mhd != NULL)
        MHD_stop_daemon(srv.mhd);
    srv.mhd = NULL;
    pthread_mutex_lock(&srv.lock);
    struct config *cfg = srv.cfg;
    srv.cfg = NULL;
    pthread_mutex_unlock(&srv.lock);
    config_unref(cfg);
}
