/*
 * encode.h - turning upstream bytes into a JSON value (body encoding).
 *
 * Pure functions, no state. The contract's rule for a response body:
 *   JSON media type and the body is one strict JSON value -> "json", embedded
 *   as the upstream sent it (no parse and re-serialise: big integers and
 *   number spellings survive); valid UTF-8 -> "text", a JSON string;
 *   anything else -> "base64". Empty bodies and HEAD -> null.
 */
#ifndef FO_ENCODE_H
#define FO_ENCODE_H

#include <stddef.h>

#include "buf.h"

enum body_encoding { BODY_NONE = 0, BODY_JSON, BODY_TEXT, BODY_BASE64 };

/* "json", "text", "base64"; NULL for BODY_NONE. */
const char *body_encoding_name(enum body_encoding enc);

/* 1 if s[0..len) is well-formed UTF-8 (no overlongs, surrogates or > U+10FFFF). */
int utf8_valid(const char *s, size_t len);

/*
 * 1 if s[0..len) is exactly one JSON value (RFC 8259) with optional white
 * space around it, valid UTF-8 throughout, nested at most max_depth deep,
 * with no object holding the same key twice (such a document has no
 * single meaning, so it is not embedded), no lone surrogate escape and no
 * U+0000 in a key (strict parsers and jansson refuse those). On success *vstart and *vend (may be
 * NULL) bound the value without the white space.
 */
int json_valid(const char *s, size_t len, size_t max_depth, size_t *vstart, size_t *vend);

/* The media type of a Content-Type value: without parameters and the
 * blanks around it. *start points into ctype ("" for NULL); returns its length. */
size_t media_type(const char *ctype, const char **start);

/* 1 if the media type of ctype is type (case-insensitive). */
int media_type_is(const char *ctype, const char *type);

/* 1 if the media type of a Content-Type value is application/json, or
 * ends in "+json" (parameters ignored, case-insensitive). NULL: 0. */
int content_type_is_json(const char *ctype);

/* Appends standard base64 (with padding) of data to out. */
fo_err base64_put(struct buf *out, const void *data, size_t len) FO_MUST_CHECK;

/*
 * Appends the JSON value for an upstream body to out and returns its
 * encoding in *enc: null for an empty body, else as described above.
 */
fo_err body_encode(struct buf *out, const char *ctype, const char *body, size_t len,
                   enum body_encoding *enc) FO_MUST_CHECK;

#endif
