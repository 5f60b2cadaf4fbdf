/*
 * test_stream.c - the NDJSON stream sink (answer_stream.c) and result lines:
 * lines read in order, park/unpark strictly paired, the unread cap, end and
 * broken ends, and gzip flushed per line (each line inflates on its own).
 */
#include <stdlib.h>
#include <zlib.h>

#include "answer.h"
#include "harness.h"
#include "result.h"

struct waker {
    int parks, unparks;
};

static void park(void *ctx)
{
    ((struct waker *)ctx)->parks++;
}

static void unpark(void *ctx)
{
    ((struct waker *)ctx)->unparks++;
}

static ssize_t rd(struct answer_stream *s, char *out, size_t max)
{
    return s->sink.ops->read(&s->sink, 0, out, max);
}

static void test_lines_and_parking(void)
{
    struct answer_stream s;
    struct waker w = { 0, 0 };
    char out[64];

    CHECK(answer_stream_init(&s, 2, 0, 1024, 0, 0) == FO_OK);
    answer_stream_set_waker(&s, park, unpark, &w);
    CHECK(s.sink.ops->size(&s.sink) == ANSWER_SIZE_UNKNOWN);
    CHECK_EQ_INT(rd(&s, out, sizeof(out)), 0); /* nothing yet: parked */
    CHECK_EQ_INT(w.parks, 1);
    CHECK_EQ_INT(rd(&s, out, sizeof(out)), 0); /* still parked: no second park */
    CHECK_EQ_INT(w.parks, 1);
    CHECK(s.sink.ops->write(&s.sink, "{\"a\":1}\n", 8) == FO_OK);
    CHECK_EQ_INT(w.unparks, 1);
    CHECK(s.sink.ops->write(&s.sink, "{\"b\":2}\n", 8) == FO_OK);
    CHECK_EQ_INT(w.unparks, 1); /* not parked any more */
    CHECK_EQ_INT(rd(&s, out, 5), 5);
    CHECK(memcmp(out, "{\"a\":", 5) == 0);
    CHECK_EQ_INT(rd(&s, out, sizeof(out)), 11);
    CHECK(memcmp(out, "1}\n{\"b\":2}\n", 11) == 0);
    s.sink.ops->finish(&s.sink, 0);
    CHECK(s.sink.ops->write(&s.sink, "x\n", 2) != FO_OK); /* after finish: refused */
    CHECK_EQ_INT(rd(&s, out, sizeof(out)), ANSWER_END);
    CHECK(!s.sink.ops->failed(&s.sink));
    s.sink.ops->release(&s.sink);
}

static void test_cap_breaks_stream(void)
{
    struct answer_stream s;
    struct waker w = { 0, 0 };
    char out[64];

    CHECK(answer_stream_init(&s, 3, 0, 20, 0, 0) == FO_OK);
    answer_stream_set_waker(&s, park, unpark, &w);
    CHECK(s.sink.ops->write(&s.sink, "0123456789\n", 11) == FO_OK);
    CHECK(s.sink.ops->write(&s.sink, "0123456789\n", 11) == FO_ETOOBIG); /* 22 > 20 unread */
    CHECK(answer_stream_overflowed(&s));
    CHECK(s.sink.ops->failed(&s.sink));
    CHECK_EQ_INT(rd(&s, out, sizeof(out)), 11); /* what was there, then broken */
    CHECK_EQ_INT(rd(&s, out, sizeof(out)), ANSWER_BROKEN);
    s.sink.ops->release(&s.sink);

    /* Read bytes no longer count against the cap. */
    CHECK(answer_stream_init(&s, 3, 0, 20, 0, 0) == FO_OK);
    for (int i = 0; i < 10; i++) {
        CHECK(s.sink.ops->write(&s.sink, "0123456789\n", 11) == FO_OK);
        CHECK_EQ_INT(rd(&s, out, sizeof(out)), 11);
    }
    CHECK(!answer_stream_overflowed(&s));
    s.sink.ops->release(&s.sink);
}

static void test_gzip_per_line(void)
{
    struct answer_stream s;
    char out[4096], plain[256];
    z_stream z;

    CHECK(answer_stream_init(&s, 2, 0, 1 << 20, 0, 1) == FO_OK);
    memset(&z, 0, sizeof(z));
    CHECK(inflateInit2(&z, 15 + 16) == Z_OK);
    const char *lines[] = { "{\"id\":\"0\",\"index\":0}\n", "{\"summary\":{}}\n" };
    for (int i = 0; i < 2; i++) {
        CHECK(s.sink.ops->write(&s.sink, lines[i], strlen(lines[i])) == FO_OK);
        ssize_t n = rd(&s, out, sizeof(out));
        CHECK(n > 0);
        /* What was read so far inflates to exactly the lines written so far. */
        z.next_in = (Bytef *)out;
        z.avail_in = (uInt)n;
        z.next_out = (Bytef *)plain;
        z.avail_out = sizeof(plain);
        int rc = inflate(&z, Z_SYNC_FLUSH);
        CHECK(rc == Z_OK);
        CHECK_EQ_INT(sizeof(plain) - z.avail_out, strlen(lines[i]));
        CHECK(memcmp(plain, lines[i], strlen(lines[i])) == 0);
    }
    s.sink.ops->finish(&s.sink, 0);
    ssize_t n = rd(&s, out, sizeof(out));
    CHECK(n > 0); /* the gzip trailer */
    z.next_in = (Bytef *)out;
    z.avail_in = (uInt)(n > 0 ? n : 0);
    z.next_out = (Bytef *)plain;
    z.avail_out = sizeof(plain);
    CHECK(inflate(&z, Z_FINISH) == Z_STREAM_END);
    CHECK_EQ_INT(rd(&s, out, sizeof(out)), ANSWER_END);
    inflateEnd(&z);
    s.sink.ops->release(&s.sink);
}

static void test_gzip_document(void)
{
    struct answer_doc d;
    struct answer_gzip g;
    struct buf out;
    char block[100];
    char *plain = malloc(300000);
    uLongf plain_len = 300000;
    ssize_t n;
    int reads = 0;

    answer_doc_init(&d);
    buf_init(&out, 0);
    for (int i = 0; i < 2000; i++)
        CHECK(buf_printf(answer_doc_buf(&d), "{\"n\":%d},", i) == FO_OK);
    d.sink.ops->finish(&d.sink, 0);
    CHECK(answer_gzip_init(&g, &d.sink) == FO_OK);
    /* Small reads: each gives at least one byte until the end. */
    while ((n = answer_gzip_read(&g, block, sizeof(block))) > 0 && reads < 100000) {
        CHECK(buf_append(&out, block, (size_t)n) == FO_OK);
        reads++;
    }
    CHECK_EQ_INT(n, ANSWER_END);
    CHECK(reads > 1);
    answer_gzip_free(&g);
    /* gzip wrapper: inflate with windowBits 15 + 16. */
    z_stream z;
    memset(&z, 0, sizeof(z));
    CHECK(inflateInit2(&z, 15 + 16) == Z_OK);
    z.next_in = (Bytef *)out.data;
    z.avail_in = (uInt)out.len;
    z.next_out = (Bytef *)plain;
    z.avail_out = (uInt)plain_len;
    CHECK(inflate(&z, Z_FINISH) == Z_STREAM_END);
    CHECK_EQ_INT(z.total_out, answer_doc_buf(&d)->len);
    CHECK(memcmp(plain, answer_doc_buf(&d)->data, z.total_out) == 0);
    inflateEnd(&z);
    free(plain);
    buf_free(&out);
    d.sink.ops->release(&d.sink);
}

static void test_result_lines(void)
{
    struct item_req it = { .id = "a", .url = "http://x/" };
    struct result r = { .status = 200, .body = "{\"v\":1}", .body_len = 7, .enc = BODY_JSON };
    struct buf b;

    buf_init(&b, 0);
    CHECK(result_put_line(&b, &it, &r, 7) == FO_OK);
    CHECK(b.len > 0 && b.data[b.len - 1] == '\n');
    CHECK(strstr(b.data, ",\"index\":7}\n") != NULL);
    CHECK(strchr(b.data, '\n') == b.data + b.len - 1);
    buf_reset(&b);
    CHECK(summary_put_line(&b, 3, 2, 1.5) == FO_OK);
    CHECK_STR(b.data,
              "{\"summary\":{\"total\":3,\"ok\":2,\"failed\":1,\"duration_ms\":1.500,"
              "\"complete\":false}}\n");
    buf_free(&b);
}

static const struct unit_test tests[] = {
    { "lines_and_parking", test_lines_and_parking },
    { "cap_breaks_stream", test_cap_breaks_stream },
    { "gzip_per_line", test_gzip_per_line },
    { "gzip_document", test_gzip_document },
    { "result_lines", test_result_lines },
};

UNIT_SUITE(stream_suite, "stream", tests);
