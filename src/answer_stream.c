/*
 * answer_stream.c - the NDJSON stream sink, its heartbeat thread, and gzip
 * of a whole answer (see answer.h). The only user of zlib.
 *
 * Locking: hb.lock guards the heartbeat list and the thread's state; a
 * stream's own lock guards the stream. Order: hb.lock, then a stream's
 * lock, then what the consumer's park/unpark take (libmicrohttpd's).
 */
#include "answer.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <zlib.h>

#include "fanoutd.h"
#include "log.h"

#define COMPACT_AT (64u << 10) /* read bytes kept in front of pending before a move */
#define ZCHUNK     (16u << 10) /* bytes of room given to deflate at once, at least */

static struct {
    pthread_mutex_t lock;
    pthread_cond_t changed; /* a stream was listed, or stop */
    struct answer_stream *head;
    pthread_t tid;
    int started, stopping;
} hb = { .lock = PTHREAD_MUTEX_INITIALIZER };

static struct answer_stream *stream_of(struct answer_sink *s)
{
    return (struct answer_stream *)(void *)s;
}

static const struct answer_stream *cstream_of(const struct answer_sink *s)
{
    return (const struct answer_stream *)(const void *)s;
}

/* Runs deflate over in[0..len) with flush, appending to b. Z_OK or a zlib
 * error; FO_ENOMEM reported as Z_MEM_ERROR. */
static int deflate_into(z_stream *z, struct buf *b, const char *in, size_t len, int flush)
{
    int rc;

    z->next_in = (Bytef *)(uintptr_t)in;
    z->avail_in = (uInt)len;
    do {
        size_t room = len + ZCHUNK;
        if (buf_reserve(b, room) != FO_OK)
            return Z_MEM_ERROR;
        z->next_out = (Bytef *)b->data + b->len;
        z->avail_out = (uInt)room;
        rc = deflate(z, flush);
        b->len += room - z->avail_out;
        b->data[b->len] = '\0';
        if (rc == Z_STREAM_END)
            return Z_OK;
        if (rc != Z_OK && rc != Z_BUF_ERROR)
            return rc;
    } while (z->avail_out == 0 || z->avail_in > 0);
    return Z_OK;
}

static int gzip_init(z_stream *z)
{
    memset(z, 0, sizeof(*z));
    /* 15 window bits + 16: a gzip header and trailer, not zlib's. */
    return deflateInit2(z, FO_GZIP_LEVEL, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY);
}

#define GZIP_IN (64u << 10) /* bytes of a document fed to deflate at once */

fo_err answer_gzip_init(struct answer_gzip *g, struct answer_sink *src)
{
    memset(g, 0, sizeof(*g));
    g->src = src;
    g->zs = malloc(sizeof(z_stream));
    g->in = malloc(GZIP_IN);
    if (g->zs == NULL || g->in == NULL || gzip_init(g->zs) != Z_OK) {
        FO_FREE(g->zs);
        FO_FREE(g->in);
        return FO_ENOMEM;
    }
    return FO_OK;
}

ssize_t answer_gzip_read(struct answer_gzip *g, char *out, size_t max)
{
    z_stream *z = g->zs;

    if (g->done)
        return ANSWER_END;
    z->next_out = (Bytef *)out;
    z->avail_out = (uInt)(max > UINT32_MAX ? UINT32_MAX : max);
    /* Until some output is made (0 would make the front end call again at
     * once) or the trailer is out. */
    while (z->avail_out == max && !g->done) {
        if (z->avail_in == 0 && !g->src_done) {
            ssize_t n = g->src->ops->read(g->src, g->src_pos, g->in, GZIP_IN);
            if (n <= 0) {
                g->src_done = 1;
            } else {
                g->src_pos += (uint64_t)n;
                z->next_in = (Bytef *)g->in;
                z->avail_in = (uInt)n;
            }
        }
        int rc = deflate(z, g->src_done ? Z_FINISH : Z_NO_FLUSH);
        if (rc == Z_STREAM_END)
            g->done = 1;
        else if (rc != Z_OK && rc != Z_BUF_ERROR)
            return ANSWER_BROKEN;
    }
    return (ssize_t)(max - z->avail_out);
}

void answer_gzip_free(struct answer_gzip *g)
{
    if (g->zs != NULL)
        deflateEnd(g->zs);
    FO_FREE(g->zs);
    FO_FREE(g->in);
}

/* ---- the stream ------------------------------------------------------------ */

static void unpark_locked(struct answer_stream *s)
{
    if (s->parked && s->unpark != NULL) {
        s->parked = 0;
        s->unpark(s->wake_ctx);
    }
}

/* Appends one line (compressed and flushed with gzip). Lock held. */
static fo_err put_locked(struct answer_stream *s, const char *data, size_t len, int is_line)
{
    size_t before = s->pending.len;

    if (s->finished)
        return FO_EINVAL;
    if (s->failed)
        return FO_ETOOBIG;
    if (!s->gzip) {
        if (s->pending.len - s->head + len > s->cap)
            goto overflow;
        if (buf_append(&s->pending, data, len) != FO_OK)
            return FO_ENOMEM;
    } else {
        int rc = deflate_into(s->zs, &s->pending, data, len, Z_SYNC_FLUSH);
        if (rc != Z_OK) {
            s->pending.len = before; /* the zlib stream is broken: so is the answer */
            s->failed = 1;
            unpark_locked(s);
            return FO_ENOMEM;
        }
        if (s->pending.len - s->head > s->cap)
            goto overflow;
    }
    s->last_write_us = fo_now_us();
    if (is_line)
        s->lines++;
    unpark_locked(s);
    return FO_OK;
overflow:
    s->failed = s->overflowed = 1;
    unpark_locked(s);
    return FO_ETOOBIG;
}

static fo_err stream_write(struct answer_sink *sink, const char *data, size_t len)
{
    struct answer_stream *s = stream_of(sink);
    fo_err err;

    pthread_mutex_lock(&s->lock);
    err = put_locked(s, data, len, 1);
    pthread_mutex_unlock(&s->lock);
    return err;
}

static void unlist(struct answer_stream *s)
{
    pthread_mutex_lock(&hb.lock);
    if (s->hb_listed) {
        if (s->hb_prev != NULL)
            s->hb_prev->hb_next = s->hb_next;
        else
            hb.head = s->hb_next;
        if (s->hb_next != NULL)
            s->hb_next->hb_prev = s->hb_prev;
        s->hb_prev = s->hb_next = NULL;
        s->hb_listed = 0;
    }
    pthread_mutex_unlock(&hb.lock);
}

static void stream_finish(struct answer_sink *sink, int failed)
{
    struct answer_stream *s = stream_of(sink);

    unlist(s);
    pthread_mutex_lock(&s->lock);
    if (!s->finished) {
        if (s->gzip && !s->failed && !failed &&
            deflate_into(s->zs, &s->pending, "", 0, Z_FINISH) != Z_OK)
            failed = 1;
        s->finished = 1;
        s->failed |= failed;
        unpark_locked(s);
    }
    pthread_mutex_unlock(&s->lock);
}

static int stream_failed(const struct answer_sink *sink)
{
    struct answer_stream *s = (struct answer_stream *)(uintptr_t)cstream_of(sink);
    int failed;

    pthread_mutex_lock(&s->lock);
    failed = s->failed;
    pthread_mutex_unlock(&s->lock);
    return failed;
}

static uint64_t stream_size(const struct answer_sink *sink)
{
    (void)sink;
    return ANSWER_SIZE_UNKNOWN;
}

static ssize_t stream_read(struct answer_sink *sink, uint64_t pos, char *out, size_t max)
{
    struct answer_stream *s = stream_of(sink);
    size_t avail, n;
    ssize_t ret;

    (void)pos; /* the consumer reads each byte once, in order */
    pthread_mutex_lock(&s->lock);
    avail = s->pending.len - s->head;
    if (avail > 0) {
        n = avail < max ? avail : max;
        memcpy(out, s->pending.data + s->head, n);
        s->head += n;
        if (s->head == s->pending.len) {
            s->head = s->pending.len = 0;
        } else if (s->head >= COMPACT_AT && s->head >= s->pending.len / 2) {
            memmove(s->pending.data, s->pending.data + s->head, s->pending.len - s->head);
            s->pending.len -= s->head;
            s->head = 0;
        }
        /* A long stream does not keep its largest line's memory. */
        if (s->pending.len == 0 && s->pending.alloc > 4 * COMPACT_AT)
            buf_free(&s->pending);
        ret = (ssize_t)n;
    } else if (s->failed) {
        ret = ANSWER_BROKEN;
    } else if (s->finished) {
        ret = ANSWER_END;
    } else {
        if (s->park != NULL && !s->parked) {
            s->parked = 1;
            s->park(s->wake_ctx);
        }
        ret = 0;
    }
    pthread_mutex_unlock(&s->lock);
    return ret;
}

static void stream_release(struct answer_sink *sink)
{
    struct answer_stream *s = stream_of(sink);

    unlist(s);
    if (s->zs != NULL) {
        deflateEnd(s->zs);
        free(s->zs);
        s->zs = NULL;
    }
    buf_free(&s->pending);
    pthread_mutex_destroy(&s->lock);
}

static const struct answer_sink_ops stream_ops = {
    .write = stream_write,
    .finish = stream_finish,
    .failed = stream_failed,
    .size = stream_size,
    .read = stream_read,
    .release = stream_release,
};

/* ---- heartbeats ------------------------------------------------------------ */

/* Writes a heartbeat into s if it has been quiet long enough; returns when
 * the next one is due (0: none). s's lock held. */
static int64_t beat_locked(struct answer_stream *s, int64_t now)
{
    char line[128];
    int64_t due = s->last_write_us + s->heartbeat_us;
    size_t pending = s->lines < s->items ? s->items - s->lines : 0;

    if (s->finished || s->failed)
        return 0;
    if (now < due)
        return due;
    int len = snprintf(line, sizeof(line),
                       "{\"heartbeat\":{\"elapsed_ms\":%.3f,\"pending\":%zu}}\n",
                       (double)(now - s->arrival_us) / 1000.0, pending);
    if (put_locked(s, line, (size_t)len, 0) != FO_OK)
        return 0;
    return s->last_write_us + s->heartbeat_us;
}

static void *hb_main(void *arg)
{
    (void)arg;
    pthread_mutex_lock(&hb.lock);
    while (!hb.stopping) {
        int64_t now = fo_now_us(), next = 0;
        for (struct answer_stream *s = hb.head; s != NULL; s = s->hb_next) {
            pthread_mutex_lock(&s->lock);
            int64_t due = beat_locked(s, now);
            pthread_mutex_unlock(&s->lock);
            if (due != 0 && (next == 0 || due < next))
                next = due;
        }
        if (next == 0) {
            pthread_cond_wait(&hb.changed, &hb.lock);
            continue;
        }
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        int64_t ns = ts.tv_nsec + (next - now) * 1000;
        ts.tv_sec += (time_t)(ns / 1000000000);
        ts.tv_nsec = (long)(ns % 1000000000);
        (void)pthread_cond_timedwait(&hb.changed, &hb.lock, &ts);
    }
    pthread_mutex_unlock(&hb.lock);
    return NULL;
}

/* Lists s for heartbeats, starting the thread if it is not running. hb.lock held. */
static void hb_list_locked(struct answer_stream *s)
{
    if (hb.stopping)
        return;
    if (!hb.started) {
        pthread_condattr_t ca;
        pthread_condattr_init(&ca);
        pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
        pthread_cond_init(&hb.changed, &ca);
        pthread_condattr_destroy(&ca);
        if (pthread_create(&hb.tid, NULL, hb_main, NULL) != 0) {
            log_warn("cannot start the stream heartbeat thread: %s", strerror(errno));
            pthread_cond_destroy(&hb.changed);
            return;
        }
        hb.started = 1;
    }
    s->hb_next = hb.head;
    if (hb.head != NULL)
        hb.head->hb_prev = s;
    hb.head = s;
    s->hb_listed = 1;
    pthread_cond_signal(&hb.changed);
}

void answer_stream_shutdown(void)
{
    pthread_mutex_lock(&hb.lock);
    int started = hb.started;
    hb.stopping = 1;
    if (started)
        pthread_cond_signal(&hb.changed);
    pthread_mutex_unlock(&hb.lock);
    if (started) {
        pthread_join(hb.tid, NULL);
        pthread_cond_destroy(&hb.changed);
    }
    pthread_mutex_lock(&hb.lock);
    hb.started = 0;
    pthread_mutex_unlock(&hb.lock);
}

fo_err answer_stream_init(struct answer_stream *s, size_t items, int64_t arrival_us, size_t cap,
                          long heartbeat_ms, int gzip)
{
    memset(s, 0, sizeof(*s));
    s->sink.ops = &stream_ops;
    buf_init(&s->pending, 0);
    s->cap = cap;
    s->items = items;
    s->arrival_us = arrival_us;
    s->last_write_us = arrival_us;
    s->heartbeat_us = (int64_t)heartbeat_ms * 1000;
    if (gzip) {
        s->zs = malloc(sizeof(z_stream));
        if (s->zs == NULL)
            return FO_ENOMEM;
        if (gzip_init(s->zs) != Z_OK) {
            FO_FREE(s->zs);
            return FO_ENOMEM;
        }
        s->gzip = 1;
    }
    pthread_mutex_init(&s->lock, NULL);
    if (heartbeat_ms > 0) {
        pthread_mutex_lock(&hb.lock);
        hb_list_locked(s);
        pthread_mutex_unlock(&hb.lock);
    }
    return FO_OK;
}

void answer_stream_set_waker(struct answer_stream *s, void (*park)(void *),
                             void (*unpark)(void *), void *ctx)
{
    /* A consumer only goes away while it is not parked (a parked one is
     * not being served), so clearing never has to unpark. */
    pthread_mutex_lock(&s->lock);
    s->park = park;
    s->unpark = unpark;
    s->wake_ctx = ctx;
    s->parked = 0;
    pthread_mutex_unlock(&s->lock);
}

int answer_stream_overflowed(struct answer_stream *s)
{
    int o;

    pthread_mutex_lock(&s->lock);
    o = s->overflowed;
    pthread_mutex_unlock(&s->lock);
    return o;
}
