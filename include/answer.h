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

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "buf.h"
#include "err.h"

#define ANSWER_SIZE_UNKNOWN UINT64_MAX
#define ANSWER_END          ((ssize_t)-1) /* read: every byte has been read */

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
     * there yet (a stream), ANSWER_END after the last byte. */
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

#endif
