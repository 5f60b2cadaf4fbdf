/*
 * http.h - the HTTP words the batch parser, the fetcher, the cache and the
 * retry policy share: request methods (RFC 9110 section 9).
 *
 * Owns nothing; a constant table.
 */
#ifndef FO_HTTP_H
#define FO_HTTP_H

enum http_method { M_GET = 0, M_HEAD, M_POST, M_PUT, M_PATCH, M_DELETE, M_OPTIONS };

/* "GET", "HEAD", ... (static storage). */
const char *http_method_name(enum http_method m);

/* The method named text in any letter case; 0 if it is none of the above. */
int http_method_parse(const char *text, enum http_method *out);

#endif
