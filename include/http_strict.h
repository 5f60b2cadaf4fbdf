/*
 * http_strict.h - the front end's strict HTTP rules (the contract's
 * "Hardening": no white space before a colon, no empty header name, Host on
 * HTTP/1.1, no NUL or control byte in the target, Transfer-Encoding exactly
 * "chunked", ...), held on both libmicrohttpd series Debian ships:
 *
 *   1.0 (Debian 13)     the library parses strictly itself at client
 *                       discipline level 1 (MHD_OPTION_CLIENT_DISCIPLINE_LVL)
 *                       and answers what it refuses (400, its own HTML body,
 *                       the connection closed); the rest is checked here,
 *                       through the public API only.
 *   0.9.75 (Debian 12)  the library is lenient and its strict mode answers
 *                       twice, so the same public checks run and, behind a
 *                       version guard, a few that read the library's 0.9.75
 *                       buffer layout (the only way to see an empty header
 *                       name or folding there). They are used only when
 *                       built for and running on 0.9.75 or older.
 *
 * Owns no state beyond one flag set at start (which of the two is in use).
 */
#ifndef FO_HTTP_STRICT_H
#define FO_HTTP_STRICT_H

#include <microhttpd.h>
#include <stddef.h>

/* The request target as the URI log callback saw it. */
struct http_target {
    const char *raw; /* the target, in libmicrohttpd's buffer (borrowed) */
    size_t len;      /* its bytes */
    int bad;         /* a space, control byte or NUL in it */
};

/* Chooses the checks for the libmicrohttpd found at run time; call once
 * before http_strict_options. Returns a short description ("libmicrohttpd
 * 1.0.1, client discipline 1") for the start-up log (static storage). */
const char *http_strict_init(void);

/* The options the daemon is started with for strict parsing, as an
 * MHD_OPTION_ARRAY (static storage, MHD_OPTION_END terminated; empty on
 * 0.9.75, where the library's own strict mode is not used). */
struct MHD_OptionItem *http_strict_options(void);

/* From MHD_OPTION_URI_LOG_CALLBACK: notes the raw target's length and any
 * byte a target must not have. On 0.9.75 it also ends the query right after
 * its '?' (fanoutd reads no query argument, and 0.9.75 overflows its memory
 * pool on about 800 of them). */
void http_strict_target(struct http_target *t, const char *uri);

/*
 * The checks every request passes before its body is read. t is what
 * http_strict_target noted for this request (NULL: not seen). Returns 0 if
 * the request may go on, else the HTTP status to refuse it with (400, 414,
 * 431, 501, 505) and *why, a message for the client (static storage).
 * Sources: RFC 9110 5.1 and 5.5 (field names and values), RFC 9112 3.2
 * (Host), 6.1 and 6.3 (framing).
 */
unsigned http_strict_check(struct MHD_Connection *conn, const struct http_target *t,
                           const char *method, const char *url, const char *version,
                           const char **why);

#endif
