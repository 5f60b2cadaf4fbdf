/*
 * template.c - `${ID.FIELD}` references: parsing and substitution (see
 * template.h). Pure functions.
 */
#include "template.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>

#include "fanoutd.h"

static void ref_free(struct tpl_ref *r)
{
    free(r->id);
    free(r->arg);
    free(r->text);
    memset(r, 0, sizeof(*r));
}

void tpl_free(struct tpl *t)
{
    for (size_t i = 0; i < t->n; i++) {
        free(t->parts[i].lit);
        ref_free(&t->parts[i].ref);
    }
    free(t->parts);
    memset(t, 0, sizeof(*t));
}

int tpl_is_one_ref(const struct tpl *t)
{
    return t->n == 1 && t->parts[0].kind != TPL_LIT;
}

int tpl_pointer_ok(const char *p, size_t len)
{
    if (len > 0 && p[0] != '/')
        return 0;
    for (size_t i = 0; i < len; i++) {
        if (p[i] == '~' && (i + 1 >= len || (p[i + 1] != '0' && p[i + 1] != '1')))
            return 0;
        if (p[i] == '\0')
            return 0;
    }
    return 1;
}

static int header_char(char c)
{
    return isalnum((unsigned char)c) || strchr("!#$%&'*+-.^_`|~", c) != NULL;
}

static struct tpl_part *add_part(struct tpl *t)
{
    struct tpl_part *p = realloc(t->parts, (t->n + 1) * sizeof(*p));

    if (p == NULL)
        return NULL;
    t->parts = p;
    memset(&p[t->n], 0, sizeof(*p));
    return &p[t->n++];
}

/* Appends literal bytes, joining them to a literal part just before. */
static fo_err add_lit(struct tpl *t, const char *s, size_t len)
{
    struct tpl_part *p;
    char *m;

    if (len == 0)
        return FO_OK;
    if (t->n > 0 && t->parts[t->n - 1].kind == TPL_LIT) {
        p = &t->parts[t->n - 1];
        if ((m = realloc(p->lit, p->lit_len + len + 1)) == NULL)
            return FO_ENOMEM;
        memcpy(m + p->lit_len, s, len);
        p->lit = m;
        p->lit_len += len;
        m[p->lit_len] = '\0';
        return FO_OK;
    }
    if ((m = malloc(len + 1)) == NULL)
        return FO_ENOMEM;
    memcpy(m, s, len);
    m[len] = '\0';
    if ((p = add_part(t)) == NULL) {
        free(m);
        return FO_ENOMEM;
    }
    p->kind = TPL_LIT;
    p->lit = m;
    p->lit_len = len;
    return FO_OK;
}

/* Reads the reference body s[0..len) (between "${" and "}") into *r. */
static fo_err parse_ref(const char *s, size_t len, struct tpl_ref *r, struct fo_msg *why)
{
    const char *dot = memchr(s, '.', len);
    const char *f;
    size_t flen;

    memset(r, 0, sizeof(*r));
    if (dot == NULL || dot == s || memchr(s, '\0', len) != NULL)
        goto bad;
    f = dot + 1;
    flen = len - (size_t)(f - s);
    if (flen == 6 && memcmp(f, "status", 6) == 0) {
        r->field = TPL_STATUS;
    } else if (flen == 4 && memcmp(f, "body", 4) == 0) {
        r->field = TPL_BODY;
    } else if (flen >= 5 && memcmp(f, "body#", 5) == 0) {
        if (!tpl_pointer_ok(f + 5, flen - 5))
            goto bad;
        r->field = TPL_BODY_PTR;
        if ((r->arg = strndup(f + 5, flen - 5)) == NULL)
            return FO_ENOMEM;
    } else if (flen > 8 && memcmp(f, "headers.", 8) == 0) {
        for (size_t i = 8; i < flen; i++) {
            if (!header_char(f[i]))
                goto bad;
        }
        r->field = TPL_HEADER;
        if ((r->arg = strndup(f + 8, flen - 8)) == NULL)
            return FO_ENOMEM;
        for (char *c = r->arg; *c; c++)
            *c = (char)tolower((unsigned char)*c);
    } else {
        goto bad;
    }
    r->id = strndup(s, (size_t)(dot - s));
    r->text = malloc(len + 4);
    if (r->id == NULL || r->text == NULL) {
        ref_free(r);
        return FO_ENOMEM;
    }
    memcpy(r->text, "${", 2);
    memcpy(r->text + 2, s, len);
    memcpy(r->text + 2 + len, "}", 2);
    return FO_OK;
bad:
    free(r->arg);
    r->arg = NULL;
    fo_msg_set(why,
               "malformed reference '${%.*s}' (expected ${ID.status}, ${ID.body}, "
               "${ID.body#POINTER} or ${ID.headers.NAME})",
               (int)(len > 80 ? 80 : len), s);
    return FO_EINVAL;
}

/* Parses s[0..len) into t, references of kind `kind`. */
static fo_err parse_into(struct tpl *t, const char *s, size_t len, enum tpl_part_kind kind,
                         struct fo_msg *why)
{
    size_t i = 0, from = 0;
    fo_err err;

    while (i < len) {
        if (s[i] != '$') {
            i++;
            continue;
        }
        if (i + 2 < len && s[i + 1] == '$' && s[i + 2] == '{') {
            /* "$${": a literal "${" */
            t->escapes = 1;
            if ((err = add_lit(t, s + from, i - from)) != FO_OK ||
                (err = add_lit(t, "${", 2)) != FO_OK)
                return err;
            i += 3;
            from = i;
            continue;
        }
        if (i + 1 < len && s[i + 1] == '{') {
            const char *end = memchr(s + i + 2, '}', len - i - 2);
            struct tpl_ref r;
            struct tpl_part *p;
            if (end == NULL) {
                fo_msg_set(why, "malformed reference: '${' without its '}'");
                return FO_EINVAL;
            }
            if ((err = add_lit(t, s + from, i - from)) != FO_OK)
                return err;
            if ((err = parse_ref(s + i + 2, (size_t)(end - s - i - 2), &r, why)) != FO_OK)
                return err;
            if ((p = add_part(t)) == NULL) {
                ref_free(&r);
                return FO_ENOMEM;
            }
            p->kind = kind;
            p->ref = r;
            t->nrefs++;
            i = (size_t)(end - s) + 1;
            from = i;
            continue;
        }
        i++;
    }
    return add_lit(t, s + from, len - from);
}

fo_err tpl_parse(const char *s, size_t len, struct tpl *out, struct fo_msg *why)
{
    fo_err err;

    memset(out, 0, sizeof(*out));
    if ((err = parse_into(out, s, len, TPL_REF, why)) != FO_OK)
        tpl_free(out);
    return err;
}

/* One JSON string token raw[0..len) (quotes included) of a JSON body. */
static fo_err json_string_part(struct tpl *t, struct jt_arena *a, const char *raw, size_t len,
                               struct fo_msg *why)
{
    struct jt_value v = { .kind = JT_STRING, .raw = raw, .len = len };
    struct tpl sub = { 0 };
    const char *text;
    size_t tlen;
    struct buf b;
    fo_err err;

    if (memchr(raw, '$', len) == NULL && memchr(raw, '\\', len) == NULL)
        return add_lit(t, raw, len);
    if ((err = jt_string(a, &v, &text, &tlen)) != FO_OK)
        return err;
    if ((err = parse_into(&sub, text, tlen, TPL_REF_INSTR, why)) != FO_OK)
        goto out;
    if (sub.nrefs == 0 && memmem(text, tlen, "${", 2) == NULL) {
        err = add_lit(t, raw, len); /* nothing to replace: as written */
        goto out;
    }
    int one = tpl_is_one_ref(&sub);
    t->escapes |= sub.escapes;
    if (one) {
        sub.parts[0].kind = TPL_REF_JSON;
    } else if ((err = add_lit(t, "\"", 1)) != FO_OK) {
        goto out;
    }
    for (size_t i = 0; i < sub.n; i++) {
        struct tpl_part *sp = &sub.parts[i], *p;
        if (sp->kind == TPL_LIT) {
            /* the literal text, JSON-escaped again (without its quotes) */
            buf_init(&b, 0);
            err = json_put_str(&b, sp->lit, sp->lit_len);
            if (err == FO_OK)
                err = add_lit(t, b.data + 1, b.len - 2);
            buf_free(&b);
            if (err != FO_OK)
                goto out;
            continue;
        }
        if ((p = add_part(t)) == NULL) {
            err = FO_ENOMEM;
            goto out;
        }
        *p = *sp;
        memset(sp, 0, sizeof(*sp));
        t->nrefs++;
    }
    if (!one)
        err = add_lit(t, "\"", 1);
out:
    tpl_free(&sub);
    return err;
}

fo_err tpl_parse_json(const char *s, size_t len, struct tpl *out, struct fo_msg *why)
{
    struct jt_arena a;
    size_t i = 0, from = 0;
    fo_err err = FO_OK;

    memset(out, 0, sizeof(*out));
    jt_arena_init(&a);
    while (i < len && err == FO_OK) {
        if (s[i] != '"') {
            i++;
            continue;
        }
        size_t start = i++;
        while (i < len && s[i] != '"')
            i += s[i] == '\\' ? 2 : 1;
        if (i >= len) {
            err = FO_EINVAL;
            fo_msg_set(why, "the body is not JSON");
            break;
        }
        i++;
        size_t k = i;
        while (k < len && (s[k] == ' ' || s[k] == '\t' || s[k] == '\n' || s[k] == '\r'))
            k++;
        if (k < len && s[k] == ':')
            continue; /* an object key: kept as written */
        if ((err = add_lit(out, s + from, start - from)) == FO_OK)
            err = json_string_part(out, &a, s + start, i - start, why);
        from = i;
    }
    if (err == FO_OK)
        err = add_lit(out, s + from, len - from);
    jt_arena_free(&a);
    if (err != FO_OK)
        tpl_free(out);
    return err;
}

/* Compact JSON of a checked value: white space outside strings dropped. */
static fo_err put_compact(struct buf *out, const char *s, size_t len)
{
    size_t i = 0, from = 0;
    fo_err err = FO_OK;

    while (i < len && err == FO_OK) {
        char c = s[i];
        if (c == '"') {
            for (i++; i < len && s[i] != '"'; i += s[i] == '\\' ? 2 : 1)
                ;
            i++;
            continue;
        }
        if (c == ' ' || c == '\t' || c == '\n' || c == '\r') {
            err = buf_append(out, s + from, i - from);
            from = ++i;
            continue;
        }
        i++;
    }
    if (err == FO_OK && from < len)
        err = buf_append(out, s + from, (i > len ? len : i) - from);
    return err;
}

fo_err tpl_value_text(struct jt_arena *a, const struct tpl_value *v, struct buf *out)
{
    struct jt_value jv = { .kind = v->kind, .raw = v->raw, .len = v->len };
    const char *text;
    size_t n;
    fo_err err;

    if (v->kind == JT_STRING) {
        if ((err = jt_string(a, &jv, &text, &n)) != FO_OK)
            return err;
        return buf_append(out, text, n);
    }
    if (v->verbatim)
        return buf_append(out, v->raw, v->len);
    return put_compact(out, v->raw, v->len);
}

static int unreserved(unsigned char c)
{
    return isalnum(c) || c == '-' || c == '.' || c == '_' || c == '~';
}

static fo_err put_percent(struct buf *out, const char *s, size_t len)
{
    static const char hex[] = "0123456789ABCDEF";
    fo_err err = FO_OK;

    for (size_t i = 0; i < len && err == FO_OK; i++) {
        unsigned char c = (unsigned char)s[i];
        if (unreserved(c)) {
            err = buf_putc(out, (char)c);
        } else {
            char e[3] = { '%', hex[c >> 4], hex[c & 15] };
            err = buf_append(out, e, 3);
        }
    }
    return err;
}

fo_err tpl_render(const struct tpl *t, enum tpl_place place, tpl_lookup_fn lookup, void *ctx,
                  struct buf *out, struct fo_msg *why)
{
    struct jt_arena a;
    struct buf text;
    fo_err err = FO_OK;

    jt_arena_init(&a);
    buf_init(&text, 0);
    for (size_t i = 0; i < t->n && err == FO_OK; i++) {
        const struct tpl_part *p = &t->parts[i];
        struct tpl_value v;
        if (p->kind == TPL_LIT) {
            err = buf_append(out, p->lit, p->lit_len);
            continue;
        }
        if ((err = lookup(ctx, &a, &p->ref, &v, why)) != FO_OK)
            break;
        if (p->kind == TPL_REF_JSON) {
            err = buf_append(out, v.raw, v.len);
            continue;
        }
        buf_reset(&text);
        if ((err = tpl_value_text(&a, &v, &text)) != FO_OK)
            break;
        if (p->kind == TPL_REF_INSTR) {
            size_t at = out->len;
            if ((err = json_put_str(out, text.data, text.len)) == FO_OK) {
                /* without its quotes */
                memmove(out->data + at, out->data + at + 1, out->len - at - 2);
                out->len -= 2;
                out->data[out->len] = '\0';
            }
        } else if (place == TPL_PLACE_URL && !tpl_is_one_ref(t)) {
            err = put_percent(out, text.data, text.len);
        } else if (place == TPL_PLACE_HEADER &&
                   (memchr(text.data, '\r', text.len) || memchr(text.data, '\n', text.len) ||
                    memchr(text.data, '\0', text.len))) {
            fo_msg_set(why, "reference %.100s holds CR, LF or NUL (not usable in a header)",
                       p->ref.text);
            err = FO_EINVAL;
        } else {
            err = buf_append(out, text.data, text.len);
        }
    }
    buf_free(&text);
    jt_arena_free(&a);
    return err;
}
