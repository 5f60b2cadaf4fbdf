/*
 * jtree.h - a lossless JSON tree over an upstream body's own text.
 *
 * The one way fanoutd walks inside an upstream JSON body (deep merge today;
 * `select` and `${ID.body#POINTER}` references will use jt_pointer). Nothing
 * is re-serialised: every value keeps its raw span in the source text and is
 * written back byte for byte, so numbers keep their exact spelling
 * (123456789012345678901234567890, 1e400, -0, 1.0), and so do strings.
 *
 * Shape: objects are ordered (key, value) lists, built when parsed; arrays
 * and scalars stay raw spans (no per-element allocation) until a caller
 * walks into an array (jt_pointer parses just the element it needs).
 * Keys compare by their decoded value: "\u0061" and "a" are one key; a key
 * is written with the spelling of its first appearance.
 *
 * Duplicate keys in one object: the last value wins whole (as most JSON
 * parsers do), at the position of the first appearance. (Bodies with
 * duplicate keys are not "json" for encode.c anyway; the tree handles them
 * because it must take any input.)
 *
 * Input: any bytes. The parser accepts exactly one strict RFC 8259 value
 * with white space around it, valid UTF-8 in strings, no lone surrogate
 * escape, nested at most max_depth deep; anything else is FO_EINVAL. It
 * never recurses (an explicit stack), so depth costs no C stack.
 *
 * Memory: every node lives in a struct jt_arena, freed at once. The source
 * text is borrowed: it must outlive the arena's use.
 */
#ifndef FO_JTREE_H
#define FO_JTREE_H

#include <stddef.h>
#include <stdint.h>

#include "buf.h"
#include "err.h"

enum jt_kind { JT_NULL = 0, JT_FALSE, JT_TRUE, JT_NUMBER, JT_STRING, JT_ARRAY, JT_OBJECT };

struct jt_object;

/* One JSON value: its kind and raw span (borrowed from the source). */
struct jt_value {
    enum jt_kind kind;
    const char *raw; /* the value's text as the source spells it */
    size_t len;
    struct jt_object *obj; /* JT_OBJECT: its members (arena); else NULL */
};

struct jt_member {
    const char *key; /* raw spelling, with its quotes (borrowed) */
    size_t key_len;
    const char *name; /* decoded key (borrowed or arena) */
    size_t name_len;
    uint64_t hash; /* of the decoded key */
    struct jt_value value;
};

struct jt_object {
    struct jt_member *m; /* in order of first appearance (arena) */
    size_t n, cap;
    uint32_t *index;  /* hash slots (member index + 1, 0: empty); NULL: search linearly */
    size_t index_cap; /* slots, a power of two */
    int edited;       /* members no longer match raw: write them one by one */
};

/* Bump allocator: chunks freed together by jt_arena_free. */
struct jt_arena {
    struct jt_chunk *head;
};

void jt_arena_init(struct jt_arena *a);
void jt_arena_free(struct jt_arena *a);

/*
 * Parses text[0..len) (one value, white space around allowed) into *out;
 * objects are built in a, arrays and scalars are spans. Errors: FO_EINVAL
 * (not one strict JSON value, or nested deeper than max_depth), FO_ENOMEM.
 */
fo_err jt_parse(struct jt_arena *a, const char *text, size_t len, size_t max_depth,
                struct jt_value *out) FO_MUST_CHECK;

/* The value of key name[0..len) (decoded UTF-8) in object value v; NULL
 * when v is not an object or has no such key. Borrowed. */
struct jt_value *jt_get(const struct jt_value *v, const char *name, size_t len);

/*
 * RFC 6901 JSON Pointer: the value that ptr[0..plen) names inside root.
 * "" is root itself; each "/token" names an object member (by decoded key,
 * "~1" for '/', "~0" for '~'; any other '~' anywhere in ptr is FO_EINVAL) or an array
 * element (a decimal index without leading zeros; "-" names nothing).
 * A pointer not starting with '/' (and not "") is FO_EINVAL. Walking into
 * an array parses the elements up to the one named (an object there is
 * built in a). Errors: FO_ENOTFOUND (no such member or element, or a
 * token into a scalar), FO_EINVAL, FO_ENOMEM. Not used yet: it is the
 * lookup that `select` and body references will share.
 */
fo_err jt_pointer(struct jt_arena *a, const struct jt_value *root, const char *ptr, size_t plen,
                  size_t max_depth, struct jt_value *out) FO_MUST_CHECK;

/*
 * Deep merge of src into dst (both JT_OBJECT): for each member of src,
 * in order, an object meeting an object merges recursively; anything
 * else replaces dst's value (a new key goes at the end). dst then refers
 * to src's nodes and text: both sources must outlive dst. Nodes of dst
 * are changed in place. FO_EINVAL if either is not an object, FO_ENOMEM.
 */
fo_err jt_merge(struct jt_arena *a, struct jt_value *dst,
                const struct jt_value *src) FO_MUST_CHECK;

/* An empty object with no source text (a merge's starting point). */
fo_err jt_new_object(struct jt_arena *a, struct jt_value *out) FO_MUST_CHECK;

/* Appends v as JSON text: raw spans copied as they are, edited objects
 * member by member (each key in its first spelling). */
fo_err jt_write(struct buf *out, const struct jt_value *v) FO_MUST_CHECK;

/* ---- composition ---- */

/* The decoded text of string value v (valid UTF-8; may hold NUL) into
 * the arena. FO_EINVAL when v is not a string, FO_ENOMEM. */
fo_err jt_string(struct jt_arena *a, const struct jt_value *v, const char **out,
                 size_t *out_len) FO_MUST_CHECK;

/*
 * Walks array arr element by element, in one pass: *pos 0 starts, and each
 * call fills *out with the next element (an object built in a) and moves
 * *pos past it. FO_ENOTFOUND at the end; FO_EINVAL (arr is not an array,
 * or nested deeper than max_depth); FO_ENOMEM.
 */
fo_err jt_array_next(struct jt_arena *a, const struct jt_value *arr, size_t *pos,
                     size_t max_depth, struct jt_value *out) FO_MUST_CHECK;

/* jt_merge with merge_arrays "concat": where both sides hold an array, the
 * merged value is dst's elements then src's (new text in a); otherwise as
 * jt_merge. */
fo_err jt_merge_concat(struct jt_arena *a, struct jt_value *dst,
                       const struct jt_value *src) FO_MUST_CHECK;

#endif
