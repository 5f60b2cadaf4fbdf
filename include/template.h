/*
 * template.h - references between items (v2 "Dependencies and references
 * between items"): parsing `${ID.FIELD}` templates once when the batch
 * arrives, and substituting resolved values when the item is about to run.
 *
 * Pure: no I/O, no global state; values come from the caller's lookup.
 *
 * Syntax, in a url, a header value or a string body: `${ID.status}`,
 * `${ID.body}`, `${ID.body#POINTER}` (RFC 6901, "" or "/..."),
 * `${ID.headers.NAME}` (a header name; matched case-insensitively, kept
 * lower-cased); `$${` is a literal `${`; any other `$` is itself. ID is
 * the text up to the first `.` (so an id holding `.` or `}` cannot be
 * referenced). A `${` without its `}` or with any other field is malformed.
 *
 * In a JSON body the template is the body's raw text: a JSON string that is
 * exactly one reference becomes the referenced JSON value; references in
 * longer strings become their text (JSON-escaped); object keys and every
 * other byte are kept as written.
 */
#ifndef FO_TEMPLATE_H
#define FO_TEMPLATE_H

#include <stddef.h>

#include "buf.h"
#include "err.h"
#include "jtree.h"

enum tpl_field { TPL_STATUS = 1, TPL_BODY, TPL_BODY_PTR, TPL_HEADER };

struct tpl_ref {
    char *id; /* owned */
    enum tpl_field field;
    char *arg;  /* TPL_BODY_PTR: the pointer; TPL_HEADER: the name, lower case; owned */
    char *text; /* the reference as written ("${a.body#/x}"), for messages; owned */
};

enum tpl_part_kind {
    TPL_LIT = 0,   /* literal bytes */
    TPL_REF,       /* a reference, written as its text (URL: percent-encoded) */
    TPL_REF_JSON,  /* JSON body: a string that was one reference; the value itself */
    TPL_REF_INSTR, /* JSON body: a reference inside a longer string; text, JSON-escaped */
};

struct tpl_part {
    enum tpl_part_kind kind;
    char *lit; /* TPL_LIT: owned bytes */
    size_t lit_len;
    struct tpl_ref ref; /* the others */
};

struct tpl {
    struct tpl_part *parts; /* owned */
    size_t n;
    size_t nrefs;
    int escapes; /* a "$${" was read: the rendering differs from the source */
};

/* Where a rendered template goes (how a value is written there). */
enum tpl_place { TPL_PLACE_URL, TPL_PLACE_HEADER, TPL_PLACE_TEXT, TPL_PLACE_JSON };

/*
 * A resolved reference: a JSON value's text (raw[0..len), kind as jtree
 * reads it). `verbatim`: its text form is raw itself (a whole JSON body,
 * "as received"); otherwise a string's text form is its characters and any
 * other value's is compact JSON.
 */
struct tpl_value {
    enum jt_kind kind;
    const char *raw;
    size_t len;
    int verbatim;
};

/* Resolves one reference into *out (borrowed: valid until the rendering
 * ends; a may hold it). FO_ENOTFOUND (cannot be resolved; why says which),
 * FO_ENOMEM. */
typedef fo_err (*tpl_lookup_fn)(void *ctx, struct jt_arena *a, const struct tpl_ref *ref,
                                struct tpl_value *out, struct fo_msg *why);

/* Parses text s[0..len) (url, header value, string body). FO_EINVAL: a
 * malformed reference (why says which), FO_ENOMEM. *out freed with tpl_free. */
fo_err tpl_parse(const char *s, size_t len, struct tpl *out, struct fo_msg *why) FO_MUST_CHECK;

/* Parses a JSON body's raw text (one checked JSON value). */
fo_err tpl_parse_json(const char *s, size_t len, struct tpl *out,
                      struct fo_msg *why) FO_MUST_CHECK;

void tpl_free(struct tpl *t);

/* 1 if the template is exactly one reference (a whole-url reference). */
int tpl_is_one_ref(const struct tpl *t);

/*
 * Appends the template with each reference resolved by lookup, written as
 * `place` says: URL, the text percent-encoded (all but RFC 3986
 * unreserved) unless the template is one reference (then as is); HEADER,
 * the text, FO_EINVAL if it holds CR, LF or NUL; TEXT, the text; JSON, as
 * tpl_parse_json describes. Errors: FO_ENOTFOUND (lookup's), FO_EINVAL
 * (why says which reference), FO_ENOMEM.
 */
fo_err tpl_render(const struct tpl *t, enum tpl_place place, tpl_lookup_fn lookup, void *ctx,
                  struct buf *out, struct fo_msg *why) FO_MUST_CHECK;

/* Appends the text form of v (see struct tpl_value). */
fo_err tpl_value_text(struct jt_arena *a, const struct tpl_value *v,
                      struct buf *out) FO_MUST_CHECK;

/* A JSON Pointer's syntax: "" or "/..." with only ~0 and ~1 escapes. */
int tpl_pointer_ok(const char *p, size_t len);

#endif
