/*
 * http_strict.c - the front end's strict HTTP rules on libmicrohttpd 0.9.75
 * and 1.0 (see http_strict.h for which library does what).
 *
 * What each series answers itself, before fanoutd sees a request:
 *
 *   1.0.x at client discipline 1: white space in a header name or before
 *     its colon, an empty header name, a line without a colon, folding, a
 *     bare CR or LF, a NUL in a header, HTTP/1.1 without Host, both
 *     Content-Length and Transfer-Encoding, and a Transfer-Encoding other
 *     than "chunked" (any coding: 400, not the contract's 501). A NUL in the
 *     request line closes the connection without an answer. Each is one
 *     answer (the library's HTML) and the connection closed.
 *   0.9.75: only a bad Content-Length, an HTTP version other than 1.x, and
 *     heads over its 32 KiB pool. Its strict mode (MHD_OPTION_STRICT_FOR_CLIENT
 *     1) closes without an answer on a space in the target and answers
 *     twice for HTTP/1.1 without Host, so it is not used: every check is
 *     made here, some of them on the read buffer's 0.9.75 layout.
 *
 * What remains for fanoutd on both is read through the public API
 * (MHD_get_connection_values, MHD_CONNECTION_INFO_REQUEST_HEADER_SIZE, the
 * URI log callback's string): header names that are not tokens, control
 * bytes in values, Host / Content-Length / Transfer-Encoding counts, the
 * Transfer-Encoding list, the version and the head's size.
 */
#include "http_strict.h"

#include <ctype.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "fanoutd.h"
#include "log.h"

/* Whether the library has the client discipline option: 0.9.77 and later
 * (Debian 13's 1.0.1). Debian 12's 0.9.75 has not. */
#define FO_MHD_HAS_DISCIPLINE (MHD_VERSION >= 0x00097701)

/* MHD_OPTION_CLIENT_DISCIPLINE_LVL: "more strict protocol interpretation,
 * within the limits set by RFCs for HTTP servers" (microhttpd.h 1.0.1). */
#define FO_MHD_DISCIPLINE 1

/* Set once by http_strict_init, before the front end's threads start; read
 * only after. 1: the 0.9.75 layout checks are in use. */
static int legacy_layout;

/* 1 if the running library is 0.9.75 or older (the read-buffer layout the
 * legacy checks were written for; 0.9.76 rewrote the request parser). */
static int running_legacy(void)
{
    unsigned major = 0, minor = 0, patch = 0;

    if (sscanf(MHD_get_version(), "%u.%u.%u", &major, &minor, &patch) != 3)
        return 0;
    return major == 0 && (minor < 9 || (minor == 9 && patch <= 75));
}

const char *http_strict_init(void)
{
    static char what[96];

    legacy_layout = !FO_MHD_HAS_DISCIPLINE && running_legacy();
    if (!FO_MHD_HAS_DISCIPLINE && !legacy_layout)
        log_warn(
            "built against libmicrohttpd %x but running on %s: the header block checks "
            "that need 0.9.75 are off; rebuild against this library",
            (unsigned)MHD_VERSION, MHD_get_version());
    (void)snprintf(what, sizeof(what), "libmicrohttpd %s, %s", MHD_get_version(),
                   FO_MHD_HAS_DISCIPLINE ? "client discipline " FO_STR(FO_MHD_DISCIPLINE)
                                         : "fanoutd's own header checks");
    return what;
}

struct MHD_OptionItem *http_strict_options(void)
{
    static struct MHD_OptionItem opts[] = {
#if FO_MHD_HAS_DISCIPLINE
        { MHD_OPTION_CLIENT_DISCIPLINE_LVL, FO_MHD_DISCIPLINE, NULL },
#endif
        { MHD_OPTION_END, 0, NULL },
    };
    return opts;
}

/* ---- the request target ------------------------------------------------ */

static int bad_target_byte(unsigned char c)
{
    return c <= ' ' || c == 0x7f;
}

/* 0.9.75: 1 if p is the protocol version as the library leaves it behind
 * the target: "HTTP/d.d" and the NUL that ended the line. */
static int at_version(const char *p)
{
    return strncmp(p, "HTTP/", 5) == 0 && isdigit((unsigned char)p[5]) && p[6] == '.' &&
           isdigit((unsigned char)p[7]) && p[8] == '\0';
}

/*
 * 0.9.75 hands the callback the target inside its read buffer, where a NUL
 * would end the C string early ("/healthz\0x" read as "/healthz"): the scan
 * goes on to the version the library left behind it. It also ends the query
 * right after its '?': 0.9.75 keeps each query argument in the connection's
 * pool, where 800 "a=b&" overflow it; it then queues a 431 that its own
 * caller overwrites, and the connection hangs until the idle timeout.
 */
static void legacy_target(struct http_target *t, const char *uri)
{
    char *query = NULL;
    const char *p;

    for (p = uri; *p != '\0' || !at_version(p + 1); p++) {
        if (bad_target_byte((unsigned char)*p))
            t->bad = 1;
        if (*p == '?' && query == NULL)
            query = (char *)p;
    }
    t->len = (size_t)(p - uri);
    if (query != NULL && query + 1 < p)
        query[1] = '\0';
}

void http_strict_target(struct http_target *t, const char *uri)
{
    t->raw = uri;
    t->len = 0;
    t->bad = uri == NULL || uri[0] == '\0';
    if (uri == NULL)
        return;
    if (legacy_layout) {
        legacy_target(t, uri);
        return;
    }
    /* 1.0 closes the connection on a NUL in the request line, so the string
     * is the whole target. */
    for (const char *p = uri; *p != '\0'; p++) {
        if (bad_target_byte((unsigned char)*p))
            t->bad = 1;
    }
    t->len = strlen(uri);
}

/* ---- the header block -------------------------------------------------- */

struct header_count {
    int count;
    int content_length;
    int transfer_encoding;
    int host;
    int bad_name;  /* empty, or not a token (white space before ':') */
    int bad_value; /* a control byte (a bare CR too) other than HTAB */
    int bad_block; /* 0.9.75: see legacy_gap */
    int eol;       /* 0.9.75: bytes of a line end, 1 ("\n") or 2 ("\r\n") */
    const char *te;
    const char *line_end;  /* 0.9.75: where the line before the next header ends */
    const char *block_end; /* 0.9.75: where the header block ends */
};

/*
 * 0.9.75 takes a header line with an empty name (": v") for the end of the
 * header block: it drops the line and reads what follows as the next
 * request. The block, still in its read buffer with each line end turned
 * into NULs, shows it: from one header's value to the next header's name
 * there is nothing but one line end, and after the last value nothing but
 * two (that line's and the empty line's), every line ending as the request
 * line does. A folded value (obsolete, and copied elsewhere by the library)
 * fails the same check. Returns 0 if [from, to) is n line ends.
 */
static int legacy_gap(struct header_count *hc, const char *from, const char *to, int n)
{
    size_t len = (size_t)(to - from);

    if (from == NULL || to < from || to > hc->block_end)
        return 1;
    if (hc->eol == 0 && n == 1 && (len == 1 || len == 2))
        hc->eol = (int)len;
    if (hc->eol == 0 && n == 2 && (len == 2 || len == 4))
        hc->eol = (int)len / 2;
    if (len != (size_t)(hc->eol * n))
        return 1;
    for (size_t i = 0; i < len; i++) {
        if (from[i] != '\0')
            return 1;
    }
    return 0;
}

/* RFC 9110 5.6.2: tchar. */
static int is_tchar(unsigned char c)
{
    return isalnum(c) || (c != '\0' && strchr("!#$%&'*+-.^_`|~", c) != NULL);
}

static enum MHD_Result count_header(void *cls, enum MHD_ValueKind kind, const char *key,
                                    const char *value)
{
    struct header_count *hc = cls;
    (void)kind;

    hc->count++;
    if (legacy_layout) {
        if (legacy_gap(hc, hc->line_end, key, 1) != 0 || value < key)
            hc->bad_block = 1;
        hc->line_end = value != NULL ? value + strlen(value) : NULL;
    }
    /* RFC 9110 5.1: a field name is a token. */
    if (key[0] == '\0')
        hc->bad_name = 1;
    for (const char *p = key; *p != '\0'; p++) {
        if (!is_tchar((unsigned char)*p))
            hc->bad_name = 1;
    }
    /* RFC 9110 5.5: no CR, LF, NUL or other control byte in a value (a bare
     * CR is not a line end to 0.9.75, but might be to whoever is next). */
    for (const char *p = value != NULL ? value : ""; *p != '\0'; p++) {
        if (((unsigned char)*p < 0x20 && *p != '\t') || *p == 0x7f)
            hc->bad_value = 1;
    }
    if (strcasecmp(key, MHD_HTTP_HEADER_CONTENT_LENGTH) == 0) {
        hc->content_length++;
    } else if (strcasecmp(key, MHD_HTTP_HEADER_TRANSFER_ENCODING) == 0) {
        hc->transfer_encoding++;
        hc->te = value;
    } else if (strcasecmp(key, MHD_HTTP_HEADER_HOST) == 0) {
        hc->host++;
    }
    return MHD_YES;
}

/*
 * A Transfer-Encoding other than exactly "chunked": 400 when the list is
 * malformed or chunked is not its one last coding (RFC 9112 6.3), 501 for a
 * coding fanoutd does not decode. Returns 0 for "chunked".
 */
static unsigned te_refusal(const char *te, const char **why)
{
    int n = 0, chunked = 0, chunked_last = 0;
    const char *p = te;

    for (;;) {
        while (*p == ' ' || *p == '\t')
            p++;
        const char *start = p;
        while (is_tchar((unsigned char)*p))
            p++;
        size_t len = (size_t)(p - start);
        while (*p == ' ' || *p == '\t')
            p++;
        if (len == 0 || (*p != ',' && *p != '\0')) {
            *why = "the Transfer-Encoding header is not a list of codings";
            return MHD_HTTP_BAD_REQUEST;
        }
        n++;
        chunked_last = len == 7 && strncasecmp(start, "chunked", 7) == 0;
        chunked += chunked_last;
        if (*p++ == '\0')
            break;
    }
    /* libmicrohttpd decodes the body as chunked only if the value is exactly
     * that; with white space after it, 0.9.75 would read to the end of the
     * connection instead. */
    if (n == 1 && chunked_last && strcasecmp(te, "chunked") == 0)
        return 0;
    if (n == 1 && chunked_last) {
        *why = "the Transfer-Encoding header is not exactly 'chunked'";
        return MHD_HTTP_BAD_REQUEST;
    }
    if (chunked > 1 || (chunked == 1 && !chunked_last)) {
        *why = "chunked must be the last transfer coding, and given once";
        return MHD_HTTP_BAD_REQUEST;
    }
    *why = "only the chunked transfer coding is supported";
    return MHD_HTTP_NOT_IMPLEMENTED;
}

/* 0.9.75: the request line as the library cut it up, method SP target SP
 * version each ended by a NUL; a client's own "\0HTTP/1.1" inside the
 * target would end it early, and the library skips extra spaces. */
static const char *legacy_request_line(const struct http_target *t, const char *method,
                                       const char *url, const char *version)
{
    if (url != t->raw || version != t->raw + t->len + 1)
        return "the request target has white space, a control character or a NUL";
    if (url != method + strlen(method) + 1)
        return "the request line is not 'method SP target SP version' (one space each)";
    return NULL;
}

/* The header block's rules; *why set and 400 returned, or 0. */
static unsigned header_refusal(const struct header_count *hc, const char *version,
                               const char **why)
{
    if (hc->bad_name || hc->bad_block)
        *why =
            "a header line is malformed (an empty name, white space before the colon, "
            "folding, or line ends of two kinds)";
    else if (hc->bad_value)
        *why = "a header value has a control character (CR, LF, NUL, 0x01-0x1f or 0x7f)";
    else if (hc->host > 1)
        *why = "more than one Host header";
    else if (hc->host == 0 && strcmp(version, MHD_HTTP_VERSION_1_1) == 0)
        *why = "an HTTP/1.1 request needs a Host header";
    else if (hc->content_length > 1)
        *why = "more than one Content-Length header";
    else if (hc->content_length && hc->transfer_encoding)
        *why = "both Content-Length and Transfer-Encoding are present";
    else if (hc->transfer_encoding > 1)
        *why = "more than one Transfer-Encoding header";
    else if (hc->transfer_encoding && strcmp(version, MHD_HTTP_VERSION_1_0) == 0)
        *why = "Transfer-Encoding in an HTTP/1.0 request (RFC 9112 6.1: faulty framing)";
    else if (hc->te != NULL)
        return te_refusal(hc->te, why);
    return *why != NULL ? MHD_HTTP_BAD_REQUEST : 0;
}

unsigned http_strict_check(struct MHD_Connection *conn, const struct http_target *t,
                           const char *method, const char *url, const char *version,
                           const char **why)
{
    struct header_count hc = { 0 };
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(conn, MHD_CONNECTION_INFO_REQUEST_HEADER_SIZE);

    *why = NULL;
    if (legacy_layout) {
        hc.line_end = version + strlen(version);
        hc.block_end = ci != NULL ? method + ci->header_size : NULL;
    }
    (void)MHD_get_connection_values(conn, MHD_HEADER_KIND, count_header, &hc);
    if (legacy_layout && legacy_gap(&hc, hc.line_end, hc.block_end, 2) != 0)
        hc.bad_block = 1;
    if (t == NULL || t->bad)
        *why = "the request target has white space, a control character or a NUL";
    else if (legacy_layout && (*why = legacy_request_line(t, method, url, version)) != NULL)
        ;
    else if (strcmp(version, MHD_HTTP_VERSION_1_1) != 0 &&
             strcmp(version, MHD_HTTP_VERSION_1_0) != 0) {
        /* 0.9.75 takes HTTP/1.2 for 1.1 */
        *why = "only HTTP/1.0 and HTTP/1.1 are supported";
        return MHD_HTTP_HTTP_VERSION_NOT_SUPPORTED;
    } else if (t->len > FO_MAX_TARGET) {
        *why = "the request target is longer than " FO_STR(FO_MAX_TARGET) " bytes";
        return MHD_HTTP_URI_TOO_LONG;
    } else if ((ci != NULL && ci->header_size > FO_MAX_HEADER_BLOCK) ||
               hc.count > FO_MAX_CLIENT_HEADERS) {
        *why = "more than " FO_STR(FO_MAX_CLIENT_HEADERS) " header lines, or more than " FO_STR(
            FO_MAX_HEADER_BLOCK) " bytes of them";
        return MHD_HTTP_REQUEST_HEADER_FIELDS_TOO_LARGE;
    }
    if (*why != NULL)
        return MHD_HTTP_BAD_REQUEST;
    return header_refusal(&hc, version, why);
}
