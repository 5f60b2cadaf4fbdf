/*
 * answer.h - how a batch's answer leaves fanoutd: one interface (struct
 * answer_sink) that the whole JSON document (today) and a stream of NDJSON
 * lines (contract v2, streaming) can both implement.
 *
 * Producer side, on whichever thread builds the answer (the job's): write
 * bytes, then finish once. Consumer side, the front end on libmicrohttpd's
 * thread: size (known up front for a document, ANSWER_SIZE_UNKNOWN for a
 * stream, which goes out chunked) and read, which copies bytes from a
 * position as the socket takes them.
 *
 * The document sink (struct answer_doc) keeps the answer in one buffer; the
 * front end reads it in blocks of FO_ANSWER_BLOCK as it is sent, after the
 * job's on_finish. A stream sink would hand out each line as it is
 * written (read returning 0: nothing yet, the connection waits), and needs
 * its own lock between the two sides; the document needs none: it is read
 * only once it is finished.
 */
#ifndef FO_ANSWER_H
#define FO_ANSWER_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "buf.h"
#include "err.h"

#define ANSWER_SIZE_UNKNOWN UINT64_MAX
#define ANSWER_END          ((ssize_t)(-1)) /* read: every byte has been read */
#define ANSWER_BROKEN       ((ssize_t)(-2)) /* read: a stream cut short (cap, failure) */

struct answer_sink;

struct answer_sink_ops {
    /* Appends len bytes to the answer. FO_ENOMEM, or FO_ETOOBIG past a cap. */
    fo_err (*write)(struct answer_sink *s, const char *data, size_t len);
    /* No more writes. failed: the answer could not be made whole (the
     * front end then answers 500, or cuts a stream short). */
    void (*finish)(struct answer_sink *s, int failed);
    /* 1 if finish said failed. */
    int (*failed)(const struct answer_sink *s);
    /* Bytes of the whole answer, or ANSWER_SIZE_UNKNOWN (a stream). */
    uint64_t (*size)(const struct answer_sink *s);
    /* Copies up to max bytes from pos into out: the count, 0 when none is
     * there yet (a stream), ANSWER_END after the last byte, ANSWER_BROKEN
     * when a stream was cut short (the connection is then closed). */
    ssize_t (*read)(struct answer_sink *s, uint64_t pos, char *out, size_t max);
    /* Frees what the sink holds (not the sink itself, which its owner embeds). */
    void (*release)(struct answer_sink *s);
};

struct answer_sink {
    const struct answer_sink_ops *ops;
};

/* The whole-document sink. */
struct answer_doc {
    struct answer_sink sink;
    struct buf buf; /* the document; merge_build writes into it whole */
    int finished, failed;
};

/* An empty document sink (nothing allocated yet). */
void answer_doc_init(struct answer_doc *d);

/* The document's buffer, for a builder that writes a whole document at
 * once (merge_build); same as writing through d->sink. */
struct buf *answer_doc_buf(struct answer_doc *d);

/*
 * A finished answer (a document) read out gzip-compressed (RFC 1952), a
 * block at a time as the socket takes it: no second copy of the answer, and
 * each read does a bounded share of the work, on the consumer's thread.
 */
struct answer_gzip {
    struct answer_sink *src; /* read from the start, in order */
    uint64_t src_pos;
    int src_done, done;
    void *zs; /* z_stream * */
    char *in; /* FO_GZIP_IN bytes of src at a time */
};

/* FO_ENOMEM (nothing to free). */
fo_err answer_gzip_init(struct answer_gzip *g, struct answer_sink *src) FO_MUST_CHECK;
/* Up to max compressed bytes into out: the count (at least 1 until the
 * end), ANSWER_END after the gzip trailer, ANSWER_BROKEN if zlib fails. */
ssize_t answer_gzip_read(struct answer_gzip *g, char *out, size_t max);
void answer_gzip_free(struct answer_gzip *g);

/*
 * The stream sink (contract v2, "Streaming"): NDJSON lines, each handed to
 * the consumer as soon as it is written (answer_stream.c).
 *
 * Producer: any thread writes one whole line per write (the job, under its
 * own lock; write never calls back into the producer). Each write that is
 * not the last counts as one item line (for the heartbeat's "pending").
 * Consumer: the front end's content reader. When nothing is there yet, read
 * calls park(ctx) under the sink's lock and returns 0; the next write, a
 * heartbeat or finish calls unpark(ctx) under the same lock, so the two are
 * never out of order. park/unpark must not block nor call into the sink.
 *
 * Bounds: the bytes written but not yet read (compressed, with gzip) never
 * pass cap: a write that would is refused with FO_ETOOBIG and the stream
 * breaks (read then gives what is left, then ANSWER_BROKEN; overflowed()
 * says why). With gzip the zlib state takes about 256 KiB more.
 *
 * Heartbeats: while nothing has been written for heartbeat_ms (0: never),
 * a thread of this module writes {"heartbeat":{"elapsed_ms":F,"pending":N}}
 * (elapsed since arrival_us). Lock order: the heartbeat list, then a
 * sink's lock, then whatever park/unpark take.
 */
struct answer_stream {
    struct answer_sink sink;
    pthread_mutex_t lock; /* guards every field below */
    struct buf pending;   /* written, not yet read: pending.data[head..len) */
    size_t head;
    size_t cap; /* most bytes waiting unread */
    int finished, failed, overflowed;
    int gzip;            /* pending holds a gzip stream, flushed per line */
    void *zs;            /* z_stream *, when gzip */
    size_t items, lines; /* item lines expected, lines written */
    int64_t arrival_us, last_write_us, heartbeat_us;
    void (*park)(void *ctx), (*unpark)(void *ctx);
    void *wake_ctx;
    int parked;
    struct answer_stream *hb_prev, *hb_next; /* heartbeat list (its lock) */
    int hb_listed;
};

/* A stream sink for a batch of items items that arrived at arrival_us
 * (monotonic): cap as above, heartbeat_ms as above, gzip 1 to compress.
 * FO_ENOMEM (nothing to release). */
fo_err answer_stream_init(struct answer_stream *s, size_t items, int64_t arrival_us, size_t cap,
                          long heartbeat_ms, int gzip) FO_MUST_CHECK;

/* Sets (or, with NULLs, clears) the consumer's park/unpark. Clear it before
 * the consumer goes away (it is not parked then: a parked consumer is not
 * being served). */
void answer_stream_set_waker(struct answer_stream *s, void (*park)(void *),
                             void (*unpark)(void *), void *ctx);

/* 1 if a write was refused because the unread bytes would pass cap. */
int answer_stream_overflowed(struct answer_stream *s);

/* Stops the heartbeat thread (started with the first stream that needs
 * it); streams still open get no more heartbeats. */
void answer_stream_shutdown(void);

#endif
