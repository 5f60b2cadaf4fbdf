/* answer.c - the whole-document answer sink (see answer.h). */
#include "answer.h"

#include <string.h>

static struct answer_doc *doc_of(struct answer_sink *s)
{
    return (struct answer_doc *)(void *)s;
}

static const struct answer_doc *cdoc_of(const struct answer_sink *s)
{
    return (const struct answer_doc *)(const void *)s;
}

static fo_err doc_write(struct answer_sink *s, const char *data, size_t len)
{
    return buf_append(&doc_of(s)->buf, data, len);
}

static void doc_finish(struct answer_sink *s, int failed)
{
    struct answer_doc *d = doc_of(s);

    d->finished = 1;
    d->failed = failed;
    if (failed)
        buf_free(&d->buf); /* nothing of a broken document is sent */
}

static int doc_failed(const struct answer_sink *s)
{
    return cdoc_of(s)->failed;
}

static uint64_t doc_size(const struct answer_sink *s)
{
    return cdoc_of(s)->buf.len;
}

static ssize_t doc_read(struct answer_sink *s, uint64_t pos, char *out, size_t max)
{
    const struct buf *b = &doc_of(s)->buf;
    size_t n;

    if (pos >= b->len)
        return ANSWER_END;
    n = b->len - (size_t)pos < max ? b->len - (size_t)pos : max;
    memcpy(out, b->data + pos, n);
    return (ssize_t)n;
}

static void doc_release(struct answer_sink *s)
{
    buf_free(&doc_of(s)->buf);
}

static const struct answer_sink_ops doc_ops = {
    .write = doc_write,
    .finish = doc_finish,
    .failed = doc_failed,
    .size = doc_size,
    .read = doc_read,
    .release = doc_release,
};

void answer_doc_init(struct answer_doc *d)
{
    memset(d, 0, sizeof(*d));
    d->sink.ops = &doc_ops;
    buf_init(&d->buf, 0);
}

struct buf *answer_doc_buf(struct answer_doc *d)
{
    return &d->buf;
}
