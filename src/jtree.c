/*
 * jtree.c - the lossless JSON tree (see jtree.h).
 *
 * One scanner does all the reading: parse_at() reads one value at a
 * position with an explicit stack of open containers, checks the grammar,
 * strings (UTF-8, escapes, surrogate pairs) and depth, and builds only the
 * objects whose parent is built (the root, and objects in objects). An
 * array's contents are checked but not built: the array stays one span,
 * and so do objects inside it until jt_pointer walks in.
 *
 * Object members are found by a hash of their decoded key: linearly while
 * an object is small, through an open-addressing index once it grows.
 * All memory comes from the arena: chunks of at least JT_CHUNK bytes.
 */
#include "jtree.h"

#include <stdlib.h>
#include <string.h>
#include <sys/types.h>

#include "encode.h"
#include "hash.h"

#define JT_CHUNK      (64 * 1024)
#define JT_LINEAR_MAX 8 /* members searched linearly, without an index */

struct jt_chunk {
    struct jt_chunk *next;
    size_t used, size;
    max_align_t data[];
};

void jt_arena_init(struct jt_arena *a)
{
    a->head = NULL;
}

void jt_arena_free(struct jt_arena *a)
{
    while (a->head != NULL) {
        struct jt_chunk *c = a->head;
        a->head = c->next;
        free(c);
    }
}

static void *arena_alloc(struct jt_arena *a, size_t n)
{
    struct jt_chunk *c = a->head;
    const size_t align = sizeof(max_align_t);

    if (n > SIZE_MAX / 2)
        return NULL;
    n = (n + align - 1) / align * align;
    if (c == NULL || c->size - c->used < n) {
        size_t size = n > JT_CHUNK ? n : JT_CHUNK;
        c = malloc(sizeof(*c) + size);
        if (c == NULL)
            return NULL;
        c->size = size;
        c->used = 0;
        c->next = a->head;
        a->head = c;
    }
    void *p = (char *)c->data + c->used;
    c->used += n;
    return p;
}

/* ---- objects ---------------------------------------------------------- */

static struct jt_object *object_new(struct jt_arena *a)
{
    struct jt_object *o = arena_alloc(a, sizeof(*o));

    if (o != NULL)
        memset(o, 0, sizeof(*o));
    return o;
}

static int same_name(const struct jt_member *m, const char *name, size_t len, uint64_t h)
{
    return m->hash == h && m->name_len == len && memcmp(m->name, name, len) == 0;
}

/* A new index of cap slots over the first n members. */
static fo_err index_build(struct jt_arena *a, struct jt_object *o, size_t cap, size_t n)
{
    uint32_t *idx = arena_alloc(a, cap * sizeof(*idx));

    if (idx == NULL)
        return FO_ENOMEM;
    memset(idx, 0, cap * sizeof(*idx));
    for (size_t i = 0; i < n; i++) {
        size_t s = (size_t)o->m[i].hash & (cap - 1);
        while (idx[s] != 0)
            s = (s + 1) & (cap - 1);
        idx[s] = (uint32_t)(i + 1);
    }
    o->index = idx;
    o->index_cap = cap;
    return FO_OK;
}

/* Index of the member named name (decoded), or -1. */
static long object_find(const struct jt_object *o, const char *name, size_t len, uint64_t h)
{
    if (o->index == NULL) {
        for (size_t i = 0; i < o->n; i++) {
            if (same_name(&o->m[i], name, len, h))
                return (long)i;
        }
        return -1;
    }
    for (size_t s = (size_t)h & (o->index_cap - 1);; s = (s + 1) & (o->index_cap - 1)) {
        uint32_t k = o->index[s];
        if (k == 0)
            return -1;
        if (same_name(&o->m[k - 1], name, len, h))
            return (long)k - 1;
    }
}

/* Appends a member (its value left null); the index follows. */
static struct jt_member *object_add(struct jt_arena *a, struct jt_object *o)
{
    if (o->n >= UINT32_MAX - 1)
        return NULL;
    if (o->n == o->cap) {
        size_t cap = o->cap ? o->cap * 2 : 4;
        struct jt_member *m = arena_alloc(a, cap * sizeof(*m));
        if (m == NULL)
            return NULL;
        if (o->n > 0)
            memcpy(m, o->m, o->n * sizeof(*m));
        o->m = m;
        o->cap = cap;
    }
    struct jt_member *m = &o->m[o->n++];
    memset(m, 0, sizeof(*m));
    if (o->n > JT_LINEAR_MAX && o->n * 2 > o->index_cap) {
        /* (Re)build at 4x the members: the table stays at most half full. */
        if (index_build(a, o, o->index_cap ? o->index_cap * 4 : 64, o->n - 1) != FO_OK) {
            o->n--;
            return NULL;
        }
    }
    return m;
}

/* Enters member i in o's index (when o has one). */
static void index_put(struct jt_object *o, size_t i)
{
    if (o->index == NULL)
        return;
    size_t s = (size_t)o->m[i].hash & (o->index_cap - 1);
    while (o->index[s] != 0)
        s = (s + 1) & (o->index_cap - 1);
    o->index[s] = (uint32_t)(i + 1);
}

/* Sets the new last member's key and hash and enters it in the index. */
static void object_keyed(struct jt_object *o, const struct jt_member *from)
{
    struct jt_member *m = &o->m[o->n - 1];

    m->key = from->key;
    m->key_len = from->key_len;
    m->name = from->name;
    m->name_len = from->name_len;
    m->hash = from->hash;
    index_put(o, o->n - 1);
}

fo_err jt_new_object(struct jt_arena *a, struct jt_value *out)
{
    memset(out, 0, sizeof(*out));
    out->kind = JT_OBJECT;
    if ((out->obj = object_new(a)) == NULL)
        return FO_ENOMEM;
    out->obj->edited = 1;
    return FO_OK;
}

struct jt_value *jt_get(const struct jt_value *v, const char *name, size_t len)
{
    long i;

    if (v == NULL || v->kind != JT_OBJECT || v->obj == NULL)
        return NULL;
    i = object_find(v->obj, name, len, fo_hash(name, len));
    return i < 0 ? NULL : &v->obj->m[i].value;
}

/* ---- the scanner -------------------------------------------------------- */

struct parser {
    struct jt_arena *a;
    const unsigned char *s;
    size_t len;
    size_t pos;
    size_t max_depth;
    struct jt_member *tmp; /* members of the open built objects, innermost last (heap) */
    size_t ntmp, atmp;
};

/* Where a value goes: the root, nowhere (only checked), or a member in p->tmp. */
#define SLOT_ROOT (-1L)
#define SLOT_NONE (-2L)

/* One open container. */
struct frame {
    char kind;   /* '{' or '[' */
    char dup;    /* built object: a member's object had a duplicate key */
    long slot;   /* where the container's value goes (SLOT_*, or a p->tmp index) */
    long member; /* built object: p->tmp index of the member being read */
    size_t from; /* built object: its first member in p->tmp */
};

static void skip_ws(struct parser *p)
{
    while (p->pos < p->len) {
        unsigned char c = p->s[p->pos];
        if (c != ' ' && c != '\t' && c != '\n' && c != '\r')
            break;
        p->pos++;
    }
}

/* \uXXXX (or a surrogate pair of them) at s[i]: the code point and the length. */
static size_t u_escape(const unsigned char *s, size_t len, size_t i, uint32_t *cp)
{
    uint32_t lo;

    if (len - i < 6 || !json_hex4(s + i + 2, cp) || (*cp >= 0xdc00 && *cp <= 0xdfff))
        return 0;
    if (*cp < 0xd800 || *cp > 0xdbff)
        return 6;
    if (len - i < 12 || s[i + 6] != '\\' || s[i + 7] != 'u' || !json_hex4(s + i + 8, &lo) ||
        lo < 0xdc00 || lo > 0xdfff)
        return 0;
    *cp = 0x10000 + ((*cp - 0xd800) << 10) + (lo - 0xdc00);
    return 12;
}

static size_t put_utf8(char *o, uint32_t cp)
{
    if (cp < 0x80) {
        o[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        o[0] = (char)(0xc0 | (cp >> 6));
        o[1] = (char)(0x80 | (cp & 0x3f));
        return 2;
    }
    if (cp < 0x10000) {
        o[0] = (char)(0xe0 | (cp >> 12));
        o[1] = (char)(0x80 | ((cp >> 6) & 0x3f));
        o[2] = (char)(0x80 | (cp & 0x3f));
        return 3;
    }
    o[0] = (char)(0xf0 | (cp >> 18));
    o[1] = (char)(0x80 | ((cp >> 12) & 0x3f));
    o[2] = (char)(0x80 | ((cp >> 6) & 0x3f));
    o[3] = (char)(0x80 | (cp & 0x3f));
    return 4;
}

/*
 * Checks the string at p->pos ('"') and moves past it. *escaped says
 * whether it holds a backslash (then its decoded form differs from its
 * raw inside).
 */
static int scan_string(struct parser *p, int *escaped)
{
    const unsigned char *s = p->s;
    size_t i = p->pos + 1;
    uint32_t cp;

    *escaped = 0;
    for (;;) {
        while (i < p->len && s[i] >= 0x20 && s[i] < 0x80 && s[i] != '"' && s[i] != '\\')
            i++;
        if (i >= p->len || s[i] < 0x20)
            return 0;
        if (s[i] == '"')
            break;
        if (s[i] == '\\') {
            *escaped = 1;
            if (i + 1 >= p->len)
                return 0;
            if (s[i + 1] == 'u') {
                size_t n = u_escape(s, p->len, i, &cp);
                if (n == 0)
                    return 0;
                i += n;
            } else if (memchr("\"\\/bfnrt", s[i + 1], 8) != NULL) {
                i += 2;
            } else {
                return 0;
            }
            continue;
        }
        /* Non-ASCII: one UTF-8 sequence, checked by the shared validator. */
        size_t n = (s[i] >= 0xf0) ? 4 : (s[i] >= 0xe0) ? 3 : 2;
        if (p->len - i < n || !utf8_valid((const char *)s + i, n))
            return 0;
        i += n;
    }
    p->pos = i + 1;
    return 1;
}

/* The decoded text of a checked string raw[0..len) (with quotes). */
static fo_err decode_string(struct jt_arena *a, const char *raw, size_t len, const char **out,
                            size_t *out_len)
{
    const unsigned char *s = (const unsigned char *)raw;
    char *o = arena_alloc(a, len); /* decoded text is never longer */
    size_t n = 0;
    uint32_t cp;

    if (o == NULL)
        return FO_ENOMEM;
    for (size_t i = 1; i + 1 < len;) {
        if (s[i] != '\\') {
            o[n++] = (char)s[i++];
            continue;
        }
        char c = (char)s[i + 1];
        if (c == 'u') {
            size_t k = u_escape(s, len, i, &cp);
            if (k == 0)
                return FO_EINVAL;
            n += put_utf8(o + n, cp);
            i += k;
            continue;
        }
        o[n++] = c == 'b'   ? '\b'
                 : c == 'f' ? '\f'
                 : c == 'n' ? '\n'
                 : c == 'r' ? '\r'
                 : c == 't' ? '\t'
                            : c;
        i += 2;
    }
    *out = o;
    *out_len = n;
    return FO_OK;
}

static int scan_number(struct parser *p)
{
    size_t n = json_number_len(p->s + p->pos, p->len - p->pos);

    p->pos += n;
    return n > 0;
}

static int scan_word(struct parser *p, const char *w, size_t n)
{
    if (p->len - p->pos < n || memcmp(p->s + p->pos, w, n) != 0)
        return 0;
    p->pos += n;
    return 1;
}

/* A scalar at p->pos; its kind, or -1. */
static int scan_scalar(struct parser *p)
{
    int escaped;

    switch (p->s[p->pos]) {
    case '"':
        return scan_string(p, &escaped) ? JT_STRING : -1;
    case 't':
        return scan_word(p, "true", 4) ? JT_TRUE : -1;
    case 'f':
        return scan_word(p, "false", 5) ? JT_FALSE : -1;
    case 'n':
        return scan_word(p, "null", 4) ? JT_NULL : -1;
    default:
        if (p->s[p->pos] != '-' && (p->s[p->pos] < '0' || p->s[p->pos] > '9'))
            return -1;
        return scan_number(p) ? JT_NUMBER : -1;
    }
}

static struct jt_value *value_at(struct parser *p, struct jt_value *root, long slot)
{
    if (slot == SLOT_ROOT)
        return root;
    return slot == SLOT_NONE ? NULL : &p->tmp[slot].value;
}

/* A key at p->pos for the object of frame f; when it is built, the key
 * opens a member in p->tmp. */
static fo_err read_key(struct parser *p, struct frame *f)
{
    size_t start = p->pos;
    int escaped;
    fo_err err;

    if (p->pos >= p->len || p->s[p->pos] != '"' || !scan_string(p, &escaped))
        return FO_EINVAL;
    if (f->slot != SLOT_NONE) {
        if (p->ntmp == p->atmp) {
            size_t n = p->atmp ? p->atmp * 2 : 64;
            struct jt_member *t = realloc(p->tmp, n * sizeof(*t));
            if (t == NULL)
                return FO_ENOMEM;
            p->tmp = t;
            p->atmp = n;
        }
        struct jt_member *m = &p->tmp[p->ntmp];
        memset(m, 0, sizeof(*m));
        m->key = (const char *)p->s + start;
        m->key_len = p->pos - start;
        if (!escaped) {
            m->name = m->key + 1;
            m->name_len = m->key_len - 2;
        } else if ((err = decode_string(p->a, m->key, m->key_len, &m->name, &m->name_len)) !=
                   FO_OK) {
            return err;
        }
        m->hash = fo_hash(m->name, m->name_len);
        f->member = (long)p->ntmp++;
    }
    skip_ws(p);
    if (p->pos >= p->len || p->s[p->pos] != ':')
        return FO_EINVAL;
    p->pos++;
    return FO_OK;
}

/* Where the value starting now goes: the open member of a built object, or nowhere. */
static long slot_of(const struct frame *f)
{
    return (f->slot == SLOT_NONE || f->kind != '{') ? SLOT_NONE : f->member;
}

/*
 * A built object is complete: its members move from p->tmp into one
 * arena array of their exact size, indexed when many. A duplicate key
 * keeps the first one's place and takes the last one's value.
 */
static fo_err close_object(struct parser *p, const struct frame *f, struct jt_value *v)
{
    size_t n = p->ntmp - f->from;
    struct jt_object *o = object_new(p->a);

    if (o == NULL || n >= UINT32_MAX ||
        (n > 0 && (o->m = arena_alloc(p->a, n * sizeof(*o->m))) == NULL))
        return FO_ENOMEM;
    o->cap = n;
    o->edited = f->dup;
    if (n > JT_LINEAR_MAX) {
        size_t cap = 64;
        while (cap < 2 * n)
            cap *= 2;
        if (index_build(p->a, o, cap, 0) != FO_OK)
            return FO_ENOMEM;
    }
    for (size_t i = f->from; i < p->ntmp; i++) {
        const struct jt_member *m = &p->tmp[i];
        long k = object_find(o, m->name, m->name_len, m->hash);
        if (k >= 0) {
            o->m[k].value = m->value;
            o->edited = 1; /* the raw text holds the key twice */
            continue;
        }
        o->m[o->n++] = *m;
        index_put(o, o->n - 1);
    }
    p->ntmp = f->from;
    v->obj = o;
    return FO_OK;
}

/* The container of stack[depth - 1] ended just before p->pos: its span,
 * its members, and a duplicate-key mark for the object around it. */
static fo_err close_container(struct parser *p, struct frame *stack, size_t depth,
                              struct jt_value *root)
{
    struct frame *f = &stack[depth - 1];
    struct jt_value *v = value_at(p, root, f->slot);
    fo_err err;

    if (v == NULL)
        return FO_OK;
    v->len = (size_t)((const char *)p->s + p->pos - v->raw);
    if (f->kind == '{' && (err = close_object(p, f, v)) != FO_OK)
        return err;
    if (v->obj != NULL && v->obj->edited && depth >= 2)
        stack[depth - 2].dup = 1; /* the enclosing object's text is stale too */
    return FO_OK;
}

/*
 * Reads one value at p->pos into *root (NULL: only check it); p->pos ends
 * just past it. Objects are built when their parent is (root: when root
 * is not NULL); arrays are never entered.
 */
static fo_err parse_at(struct parser *p, struct frame *stack, struct jt_value *root)
{
    size_t depth = 0;
    struct jt_value *v;
    fo_err err;

    for (;;) {
        long slot = depth == 0 ? (root != NULL ? SLOT_ROOT : SLOT_NONE)
                               : slot_of(&stack[depth - 1]);
        skip_ws(p);
        if (p->pos >= p->len)
            return FO_EINVAL;
        size_t start = p->pos;
        unsigned char c = p->s[start];
        if (c == '{' || c == '[') {
            if (depth == p->max_depth)
                return FO_EINVAL;
            struct frame *f = &stack[depth++];
            f->kind = (char)c;
            f->dup = 0;
            f->slot = slot;
            f->member = -1;
            f->from = p->ntmp;
            if ((v = value_at(p, root, slot)) != NULL) {
                v->kind = c == '{' ? JT_OBJECT : JT_ARRAY;
                v->raw = (const char *)p->s + start;
                v->obj = NULL;
            }
            p->pos++;
            skip_ws(p);
            if (p->pos < p->len && p->s[p->pos] == (c == '{' ? '}' : ']')) {
                p->pos++;
                if ((err = close_container(p, stack, depth, root)) != FO_OK)
                    return err;
                depth--;
                goto after_value;
            }
            if (c == '[')
                continue;
            goto key;
        }
        int kind = scan_scalar(p);
        if (kind < 0)
            return FO_EINVAL;
        if ((v = value_at(p, root, slot)) != NULL) {
            v->kind = (enum jt_kind)kind;
            v->raw = (const char *)p->s + start;
            v->len = p->pos - start;
            v->obj = NULL;
        }
after_value:
        for (;;) {
            if (depth == 0)
                return FO_OK;
            skip_ws(p);
            if (p->pos >= p->len)
                return FO_EINVAL;
            struct frame *top = &stack[depth - 1];
            c = p->s[p->pos++];
            if (c == ',') {
                if (top->kind == '[')
                    break;
                goto key;
            }
            if (c != (top->kind == '{' ? '}' : ']'))
                return FO_EINVAL;
            if ((err = close_container(p, stack, depth, root)) != FO_OK)
                return err;
            depth--;
        }
        continue;
key:
        skip_ws(p);
        if ((err = read_key(p, &stack[depth - 1])) != FO_OK)
            return err;
    }
}

#define JT_INLINE_DEPTH 64

/* parse_at with a stack for max_depth levels. */
static fo_err parse_one(struct parser *p, struct jt_value *out)
{
    struct frame inline_stack[JT_INLINE_DEPTH], *stack = inline_stack;
    fo_err err;

    if (p->max_depth > JT_INLINE_DEPTH && (stack = malloc(p->max_depth * sizeof(*stack))) == NULL)
        return FO_ENOMEM;
    err = parse_at(p, stack, out);
    if (stack != inline_stack)
        free(stack);
    FO_FREE(p->tmp);
    p->ntmp = p->atmp = 0;
    return err;
}

fo_err jt_parse(struct jt_arena *a, const char *text, size_t len, size_t max_depth,
                struct jt_value *out)
{
    struct parser p = {
        .a = a, .s = (const unsigned char *)text, .len = len, .max_depth = max_depth
    };
    fo_err err;

    memset(out, 0, sizeof(*out));
    if ((err = parse_one(&p, out)) != FO_OK)
        return err;
    skip_ws(&p);
    return p.pos == len ? FO_OK : FO_EINVAL;
}

/* ---- JSON Pointer ------------------------------------------------------- */

/* Unescapes one reference token (~0, ~1) into the arena. */
static fo_err pointer_token(struct jt_arena *a, const char *t, size_t n, const char **out,
                            size_t *out_len)
{
    char *o = arena_alloc(a, n + 1);
    size_t k = 0;

    if (o == NULL)
        return FO_ENOMEM;
    for (size_t i = 0; i < n; i++) {
        if (t[i] != '~') {
            o[k++] = t[i];
            continue;
        }
        if (i + 1 >= n || (t[i + 1] != '0' && t[i + 1] != '1'))
            return FO_EINVAL;
        o[k++] = t[i + 1] == '0' ? '~' : '/';
        i++;
    }
    *out = o;
    *out_len = k;
    return FO_OK;
}

/* An array index: digits, no leading zero (but "0"); -1 if not one. */
static long long array_index(const char *t, size_t n)
{
    long long v = 0;

    if (n == 0 || n > 18 || (n > 1 && t[0] == '0'))
        return -1;
    for (size_t i = 0; i < n; i++) {
        if (t[i] < '0' || t[i] > '9')
            return -1;
        v = v * 10 + (t[i] - '0');
    }
    return v;
}

/* Element idx of array value arr, parsed (an object built) into *out. */
static fo_err array_element(struct jt_arena *a, const struct jt_value *arr, long long idx,
                            size_t max_depth, struct jt_value *out)
{
    struct parser p = { .a = a,
                        .s = (const unsigned char *)arr->raw,
                        .len = arr->len,
                        .pos = 1,
                        .max_depth = max_depth };
    fo_err err;

    skip_ws(&p);
    if (p.pos < p.len && p.s[p.pos] == ']')
        return FO_ENOTFOUND;
    for (long long i = 0;; i++) {
        memset(out, 0, sizeof(*out));
        if ((err = parse_one(&p, i == idx ? out : NULL)) != FO_OK)
            return err;
        if (i == idx)
            return FO_OK;
        skip_ws(&p);
        if (p.pos >= p.len || p.s[p.pos] != ',')
            return FO_ENOTFOUND;
        p.pos++;
    }
}

fo_err jt_pointer(struct jt_arena *a, const struct jt_value *root, const char *ptr, size_t plen,
                  size_t max_depth, struct jt_value *out)
{
    struct jt_value cur = *root;
    size_t i = 0;
    fo_err err;

    if (plen > 0 && ptr[0] != '/')
        return FO_EINVAL;
    /* A malformed pointer is refused whatever the document holds. */
    for (size_t k = 0; k < plen; k++) {
        if (ptr[k] == '~' && (k + 1 >= plen || (ptr[k + 1] != '0' && ptr[k + 1] != '1')))
            return FO_EINVAL;
    }
    while (i < plen) {
        const char *t = ptr + i + 1, *end = memchr(t, '/', plen - i - 1);
        size_t n = end ? (size_t)(end - t) : plen - i - 1;
        const char *name;
        size_t name_len;

        i += 1 + n;
        if ((err = pointer_token(a, t, n, &name, &name_len)) != FO_OK)
            return err;
        if (cur.kind == JT_OBJECT) {
            struct jt_value *v = jt_get(&cur, name, name_len);
            if (v == NULL)
                return FO_ENOTFOUND;
            cur = *v;
        } else if (cur.kind == JT_ARRAY) {
            long long idx = array_index(name, name_len);
            if (idx < 0)
                return FO_ENOTFOUND; /* "-" and non-indices name nothing */
            struct jt_value el;
            if ((err = array_element(a, &cur, idx, max_depth, &el)) != FO_OK)
                return err;
            cur = el;
        } else {
            return FO_ENOTFOUND;
        }
    }
    *out = cur;
    return FO_OK;
}

/* ---- merge and write ---------------------------------------------------- */

fo_err jt_write(struct buf *out, const struct jt_value *v)
{
    fo_err err;

    if (v->kind != JT_OBJECT || v->obj == NULL || !v->obj->edited)
        return buf_append(out, v->raw, v->len);
    if ((err = buf_putc(out, '{')) != FO_OK)
        return err;
    for (size_t i = 0; i < v->obj->n; i++) {
        const struct jt_member *m = &v->obj->m[i];
        if (i > 0 && (err = buf_putc(out, ',')) != FO_OK)
            return err;
        if ((err = buf_append(out, m->key, m->key_len)) != FO_OK ||
            (err = buf_putc(out, ':')) != FO_OK || (err = jt_write(out, &m->value)) != FO_OK)
            return err;
    }
    return buf_putc(out, '}');
}

/* ---- composition: strings, array walks, concatenating merge ---- */

fo_err jt_string(struct jt_arena *a, const struct jt_value *v, const char **out, size_t *out_len)
{
    if (v->kind != JT_STRING || v->len < 2)
        return FO_EINVAL;
    return decode_string(a, v->raw, v->len, out, out_len);
}

fo_err jt_array_next(struct jt_arena *a, const struct jt_value *arr, size_t *pos,
                     size_t max_depth, struct jt_value *out)
{
    struct parser p = { .a = a,
                        .s = (const unsigned char *)arr->raw,
                        .len = arr->len,
                        .pos = *pos == 0 ? 1 : *pos,
                        .max_depth = max_depth };
    fo_err err;

    if (arr->kind != JT_ARRAY)
        return FO_EINVAL;
    skip_ws(&p);
    if (*pos != 0) {
        /* Past an element: a ',' goes on, anything else is the end. */
        if (p.pos >= p.len || p.s[p.pos] != ',')
            return FO_ENOTFOUND;
        p.pos++;
    } else if (p.pos < p.len && p.s[p.pos] == ']') {
        return FO_ENOTFOUND;
    }
    memset(out, 0, sizeof(*out));
    if ((err = parse_one(&p, out)) != FO_OK)
        return err;
    *pos = p.pos;
    return FO_OK;
}

/* The text between an array's brackets, without the white space around it. */
static void array_inner(const struct jt_value *v, const char **s, size_t *n)
{
    const char *b = v->raw + 1, *e = v->raw + v->len - 1;

    while (b < e && (*b == ' ' || *b == '\t' || *b == '\n' || *b == '\r'))
        b++;
    while (e > b && (e[-1] == ' ' || e[-1] == '\t' || e[-1] == '\n' || e[-1] == '\r'))
        e--;
    *s = b;
    *n = (size_t)(e - b);
}

/* dst becomes the array of dst's elements then src's (a new text in a). */
static fo_err array_concat(struct jt_arena *a, struct jt_value *dst, const struct jt_value *src)
{
    const char *ds, *ss;
    size_t dn, sn;
    char *t;

    array_inner(dst, &ds, &dn);
    array_inner(src, &ss, &sn);
    if (sn == 0)
        return FO_OK;
    if (dn == 0) {
        *dst = *src;
        return FO_OK;
    }
    if ((t = arena_alloc(a, dn + sn + 3)) == NULL)
        return FO_ENOMEM;
    t[0] = '[';
    memcpy(t + 1, ds, dn);
    t[1 + dn] = ',';
    memcpy(t + 2 + dn, ss, sn);
    t[2 + dn + sn] = ']';
    dst->raw = t;
    dst->len = dn + sn + 3;
    return FO_OK;
}

/* The one deep merge: objects merge recursively, later keys win; with
 * concat, an array meeting an array is appended to it (merge_arrays). */
static fo_err merge(struct jt_arena *a, struct jt_value *dst, const struct jt_value *src,
                    int concat)
{
    struct jt_object *d, *s;
    fo_err err;

    if (dst->kind != JT_OBJECT || src->kind != JT_OBJECT || dst->obj == NULL || src->obj == NULL)
        return FO_EINVAL;
    d = dst->obj;
    s = src->obj;
    if (s->n > 0)
        d->edited = 1;
    for (size_t i = 0; i < s->n; i++) {
        const struct jt_member *sm = &s->m[i];
        long k = object_find(d, sm->name, sm->name_len, sm->hash);
        if (k < 0) {
            if (object_add(a, d) == NULL)
                return FO_ENOMEM;
            object_keyed(d, sm);
            d->m[d->n - 1].value = sm->value;
            continue;
        }
        struct jt_value *dv = &d->m[k].value;
        if (dv->kind == JT_OBJECT && sm->value.kind == JT_OBJECT)
            err = merge(a, dv, &sm->value, concat);
        else if (concat && dv->kind == JT_ARRAY && sm->value.kind == JT_ARRAY)
            err = array_concat(a, dv, &sm->value);
        else
            err = (*dv = sm->value, FO_OK);
        if (err != FO_OK)
            return err;
    }
    return FO_OK;
}

fo_err jt_merge(struct jt_arena *a, struct jt_value *dst, const struct jt_value *src)
{
    return merge(a, dst, src, 0);
}

fo_err jt_merge_concat(struct jt_arena *a, struct jt_value *dst, const struct jt_value *src)
{
    return merge(a, dst, src, 1);
}
