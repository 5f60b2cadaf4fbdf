/*
 * encode.h - turning upstream bytes into a JSON value (body encoding).
 *
 * Pure functions, no state. The contract's rule for a response body:
 *   a Content-Type charset other than UTF-8/US-ASCII -> converted to UTF-8
 *   first (glibc iconv); a charset iconv does not know, or bytes that do
 *   not convert -> "base64". Then a leading UTF-8 byte order mark is
 *   dropped, and: JSON media type and the text is one strict JSON value
 *   -> "json", embedded as written (no parse and re-serialise: big
 *   integers and number spellings survive); valid UTF-8 -> "text", a JSON
 *   string; anything else -> "base64" of the upstream's bytes as they
 *   came. Empty bodies and HEAD -> null.
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

/* How many bytes of s to print with "%.*s" to show at most max of them
 * without ending inside a UTF-8 character: a message cut mid-character is
 * no longer valid UTF-8, and would be replaced by its bare error code. */
int utf8_clip(const char *s, size_t max);

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

/* Longest charset name kept from a Content-Type (with its NUL). */
#define CHARSET_NAME_MAX 64

/*
 * The charset parameter of a Content-Type value (names case-insensitive,
 * quoted values allowed). Returns 0 when there is none or it is UTF-8 or
 * US-ASCII (nothing to convert); else 1 with its name in name[0..size)
 * ("" when it is too long or holds characters no charset name has).
 */
int content_charset(const char *ctype, char *name, size_t size);

/*
 * Converts in[0..len) from charset to UTF-8 into *out (initialised here;
 * the caller frees it with buf_free). The output is capped at 3 bytes
 * per input byte (UTF-16 grows at most 1.5x, ISO-8859-1 2x, any
 * single-byte charset 3x): past that, as for an unknown charset or a
 * byte that is no character there, FO_EINVAL (then out is empty).
 * FO_ENOMEM when memory runs out.
 */
fo_err charset_to_utf8(const char *charset, const char *in, size_t len,
                       struct buf *out) FO_MUST_CHECK;

/* Appends standard base64 (with padding) of data to out. */
fo_err base64_put(struct buf *out, const void *data, size_t len) FO_MUST_CHECK;

/*
 * Appends the JSON value for an upstream body to out and returns its
 * encoding in *enc: null for an empty body, else as described above.
 */
fo_err body_encode(struct buf *out, const char *ctype, const char *body, size_t len,
                   enum body_encoding *enc) FO_MUST_CHECK;

/* Length of the JSON number (RFC 8259 section 6: -?int frac? exp?) that
 * starts at s (len bytes), or 0 if none does. The one number scanner of the
 * strict validator and of jtree. */
size_t json_number_len(const unsigned char *s, size_t len);

/* The 4 hex digits at p (of a \uXXXX escape, RFC 8259 section 7), either
 * case, as *out: 1, or 0 when one is not a hex digit. Reads 4 bytes. */
int json_hex4(const unsigned char *p, uint32_t *out);

#endif
