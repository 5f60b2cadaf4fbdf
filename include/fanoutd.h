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

#define FANOUTD_VERSION "1.0.0"

/* Input bounds (outside input never grows a buffer past these). */
#define FO_MAX_URL_LEN        8192    /* bytes in one item URL */
#define FO_MAX_ID_LEN         256     /* bytes in one item id */
#define FO_MAX_ITEM_HEADERS   64      /* headers in one item */
#define FO_MAX_HEADER_LEN     8192    /* bytes in one header name + value */
#define FO_MAX_JSON_DEPTH     512     /* nesting of an upstream JSON body we embed */
#define FO_MAX_CONTENT_TYPE   256     /* bytes of an upstream Content-Type we keep */
#define FO_MAX_LIST_ITEMS     256     /* entries in one configuration list */
#define FO_MAX_CONFIG_LINE    16384   /* bytes in one configuration line (fits
                                         FO_MAX_LIST_ITEMS IPv6 CIDRs as printed) */
#define FO_MAX_FORWARD_VALUE  8192    /* bytes of one forwarded client header */
#define FO_REQUEST_ID_MAX     128     /* bytes of a client's X-Request-Id we keep */
#define FO_REQUEST_ID_RANDOM  16      /* random bytes in a generated request id */
#define FO_MAX_DISCARD        (4u << 20) /* request body bytes dropped after a 413 */

/* Internal tunables. */
#define FO_WORKER_STACK       (256 * 1024) /* pthread stack of fetch workers */
#define FO_FRONT_THREADS_MAX  4       /* libmicrohttpd thread pool, at most */
#define FO_RETRY_AFTER        "1"     /* Retry-After (seconds) on 503 */
#define FO_DRAIN_FLUSH_MS     2000    /* after grace: time to send answers */
#define FO_UNIX_PREFIX        "unix:" /* listen = unix:/path/to/socket */
#define FO_LISTEN_BACKLOG     1024    /* listen(2) backlog of a socket fanoutd opens */

/* Free and NULL in one step, so a freed pointer is never used again. */
#define FO_FREE(p) do { free(p); (p) = NULL; } while (0)

#define FO_ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

#define FO_MUST_CHECK __attribute__((warn_unused_result))

/* Milliseconds on the monotonic clock. */
int64_t fo_now_ms(void);
/* Microseconds on the monotonic clock. */
int64_t fo_now_us(void);

#endif
