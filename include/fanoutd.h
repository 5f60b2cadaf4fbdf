/*
 * fanoutd.h - limits, defaults and small helpers shared by every module.
 *
 * Every bound on outside input lives here as a named constant, so a reader
 * finds all of them in one place (OpenBSD httpd.h style).
 */
#ifndef FANOUTD_H
#define FANOUTD_H

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#define FANOUTD_VERSION "2.1.0"

/* Input bounds (outside input never grows a buffer past these). */
#define FO_MAX_URL_LEN      8192 /* bytes in one item URL */
#define FO_MAX_ID_LEN       256  /* bytes in one item id */
#define FO_MAX_ITEM_HEADERS 64   /* headers in one item */
#define FO_MAX_HEADER_LEN   8192 /* bytes in one header name + value */
#define FO_MAX_JSON_DEPTH   512  /* nesting of an upstream JSON body we embed */
#define FO_MAX_CONTENT_TYPE 256  /* bytes of an upstream Content-Type we keep */
#define FO_MAX_LIST_ITEMS   256  /* entries in one configuration list */
#define FO_MAX_CONFIG_LINE \
    16384                                /* bytes in one configuration line (fits
                                         FO_MAX_LIST_ITEMS IPv6 CIDRs as printed) */
#define FO_MAX_FORWARD_VALUE  8192       /* bytes of one forwarded client header */
#define FO_REQUEST_ID_MAX     128        /* bytes of a client's X-Request-Id we keep */
#define FO_REQUEST_ID_RANDOM  16         /* random bytes in a generated request id */
#define FO_MAX_DISCARD        (4u << 20) /* request body bytes dropped after a 413 */
#define FO_MAX_TARGET         8192       /* bytes of a client's request target; beyond: 414 */
#define FO_MAX_HEADER_BLOCK   16384 /* bytes of a client's request line and headers; beyond: 431 */
#define FO_MAX_CLIENT_HEADERS 100   /* header lines in a client's request; beyond: 431 */
#define FO_MAX_TOKEN_FILE     4096  /* bytes of an auth_token @FILE */
#define FO_MAX_OTHER_BODY     (64u << 10) /* body bytes read on any path but POST /batch */

/* A constant's value as a string literal, for messages: FO_STR(FO_MAX_TARGET). */
#define FO_STR_(x) #x
#define FO_STR(x)  FO_STR_(x)

/* Internal tunables. */
#define FO_WORKER_STACK      (256 * 1024) /* pthread stack of fetch workers */
#define FO_WORKERS_FLOOR     4     /* workers kept when idle (queue.c: the pool is elastic) */
#define FO_WORKER_IDLE_MS    30000 /* a worker idle this long leaves, down to the floor */
#define FO_FRONT_THREADS_MAX 4     /* libmicrohttpd thread pool, at most */
#define FO_RETRY_AFTER       "1"   /* Retry-After (seconds) on 503 */
#define FO_DRAIN_FLUSH_MS    2000  /* after grace: least time to send answers */
#define FO_FINISHERS_MAX     16    /* threads building deadline/shutdown answers */
#define FO_STOP_POLL_MS      100   /* shutdown: how often a further stop signal is looked for */
#define FO_CLIENT_POLL_US    1000  /* a job's client socket polled at most this often (job.c) */
#define FO_ANSWER_BLOCK      (256u << 10) /* bytes of an answer handed to the socket at once */
#define FO_MMAP_THRESHOLD    (256u << 10) /* blocks this large are mmapped (main.c) */
#define FO_STREAM_BLOCK      (16u << 10)  /* bytes of a stream handed to the socket at once */
#define FO_GZIP_LEVEL        1 /* zlib level of gzip answers: fast, JSON still shrinks */
#define FO_TRIM_AFTER_BYTES \
    (16u << 20) /* a batch that held this many body bytes
                                         gives free heap back to the kernel when it
                                         is freed (malloc_trim): glibc keeps it */

#define FO_NAME_TTL_MS \
    60000                      /* a name's resolved address counts for
                                         per_host_limit this long (libcurl's DNS
                                         cache keeps its answers as long) */
#define FO_NAME_CACHE_MAX 4096 /* resolved names kept at most */

/* Retries, circuit breaker, rate. */
#define FO_RETRY_BACKOFF_MAX_MS 86400000L /* an item's retry.backoff_ms, at most */
#define FO_RETRY_AFTER_MAX_LEN  64        /* bytes of an upstream Retry-After we read */
#define FO_BREAKER_MAX          65536     /* host:ports the breaker table tracks at once */
#define FO_RATE_MAX             65536     /* host:ports with a rate bucket at once */

/* The message of an item refused by max_answer_bytes (%ld: the cap). */
#define FO_ANSWER_CAP_MSG "the answer's bodies would be larger than max_answer_bytes (%ld)"
#define FO_UNIX_PREFIX    "unix:" /* listen = unix:/path/to/socket */
#define FO_LISTEN_BACKLOG 1024    /* listen(2) backlog of a socket fanoutd opens */

/* Free and NULL in one step, so a freed pointer is never used again. */
#define FO_FREE(p)  \
    do {            \
        free(p);    \
        (p) = NULL; \
    } while (0)

#define FO_ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

#define FO_MUST_CHECK __attribute__((warn_unused_result))

/* Milliseconds on the monotonic clock. */
int64_t fo_now_ms(void);
/* Microseconds on the monotonic clock. */
int64_t fo_now_us(void);
/* Whether a header name (a NUL-terminated name, or the name part of a
 * "Name: value" / "Name;" line) is one fanoutd never forwards from the client:
 * hop-by-hop and framing headers (RFC 9110 7.6.1), Host, Expect and CDN-Loop,
 * which fanoutd sets itself. Case-insensitive. */
int fo_header_not_forwardable(const char *name);

#endif
