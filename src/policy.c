/*
 * policy.c - CIDR parsing and the allow/deny decision (see policy.h).
 */
#include "policy.h"

#include <arpa/inet.h>
#include <ifaddrs.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"

static int parse_prefix(const char *s, unsigned max, unsigned *out)
{
    char *end;
    unsigned long v;

    if (*s < '0' || *s > '9')
        return 0;
    v = strtoul(s, &end, 10);
    if (*end != '\0' || v > max || (s[0] == '0' && s[1] != '\0'))
        return 0;
    *out = (unsigned)v;
    return 1;
}

static int host_bits_zero(const struct cidr *c)
{
    unsigned bytes = c->family == AF_INET ? 4 : 16;

    for (unsigned bit = c->prefix; bit < bytes * 8; bit++) {
        if (c->addr[bit / 8] & (0x80 >> (bit % 8)))
            return 0;
    }
    return 1;
}

fo_err cidr_parse(const char *text, struct cidr *out, struct fo_msg *msg)
{
    char addr[INET6_ADDRSTRLEN + 8];
    const char *slash = strchr(text, '/');
    size_t alen = slash ? (size_t)(slash - text) : strlen(text);

    memset(out, 0, sizeof(*out));
    if (alen == 0 || alen >= sizeof(addr)) {
        fo_msg_set(msg, "'%s' is not a CIDR (address/prefix)", text);
        return FO_EINVAL;
    }
    memcpy(addr, text, alen);
    addr[alen] = '\0';
    /* inet_pton accepts only the dotted-quad form for IPv4, never 010 or 0x. */
    if (inet_pton(AF_INET, addr, out->addr) == 1) {
        out->family = AF_INET;
        out->prefix = 32;
    } else if (inet_pton(AF_INET6, addr, out->addr) == 1) {
        out->family = AF_INET6;
        out->prefix = 128;
    } else {
        fo_msg_set(msg, "'%s' is not an IPv4 or IPv6 address", addr);
        return FO_EINVAL;
    }
    if (slash != NULL && !parse_prefix(slash + 1, out->prefix, &out->prefix)) {
        fo_msg_set(msg, "'%s' has a bad prefix length (0-%u)", text,
                   out->family == AF_INET ? 32u : 128u);
        return FO_EINVAL;
    }
    if (!host_bits_zero(out)) {
        fo_msg_set(msg, "'%s' has host bits set below the /%u prefix", text, out->prefix);
        return FO_EINVAL;
    }
    /* ::ffff:a.b.c.d/96+n is the IPv4 network a.b.c.d/n. */
    static const uint8_t mapped[12] = { 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff };
    if (out->family == AF_INET6 && out->prefix >= 96 && memcmp(out->addr, mapped, 12) == 0) {
        memmove(out->addr, out->addr + 12, 4);
        memset(out->addr + 4, 0, 12);
        out->family = AF_INET;
        out->prefix -= 96;
    }
    return FO_OK;
}

void cidr_format(const struct cidr *c, char *out, size_t size)
{
    char a[INET6_ADDRSTRLEN];

    if (inet_ntop(c->family, c->addr, a, sizeof(a)) == NULL)
        (void)snprintf(a, sizeof(a), "?");
    (void)snprintf(out, size, "%s/%u", a, c->prefix);
}

int cidr_contains(const struct cidr *c, int family, const uint8_t *addr)
{
    unsigned full = c->prefix / 8, rest = c->prefix % 8;

    if (c->family != family)
        return 0;
    if (memcmp(c->addr, addr, full) != 0)
        return 0;
    if (rest == 0)
        return 1;
    uint8_t mask = (uint8_t)(0xff << (8 - rest));
    return (addr[full] & mask) == c->addr[full];
}

fo_err cidr_list_add(struct cidr_list *l, const struct cidr *c)
{
    struct cidr *v;

    for (size_t i = 0; i < l->n; i++) {
        if (l->v[i].family == c->family && l->v[i].prefix == c->prefix &&
            memcmp(l->v[i].addr, c->addr, 16) == 0)
            return FO_OK;
    }
    if (l->n >= FO_MAX_LIST_ITEMS)
        return FO_ETOOBIG;
    v = realloc(l->v, (l->n + 1) * sizeof(*v));
    if (v == NULL)
        return FO_ENOMEM;
    v[l->n++] = *c;
    l->v = v;
    return FO_OK;
}

void cidr_list_free(struct cidr_list *l)
{
    FO_FREE(l->v);
    l->n = 0;
}

fo_err cidr_list_copy(struct cidr_list *dst, const struct cidr_list *src)
{
    dst->v = NULL;
    dst->n = 0;
    if (src->n == 0)
        return FO_OK;
    dst->v = malloc(src->n * sizeof(*dst->v));
    if (dst->v == NULL)
        return FO_ENOMEM;
    memcpy(dst->v, src->v, src->n * sizeof(*dst->v));
    dst->n = src->n;
    return FO_OK;
}

static int list_match(const struct cidr_list *l, int family, const uint8_t *addr)
{
    for (size_t i = 0; i < l->n; i++) {
        if (cidr_contains(&l->v[i], family, addr))
            return 1;
    }
    return 0;
}

static enum policy_verdict judge(const struct cidr_list *allow, const struct cidr_list *deny,
                                 int family, const uint8_t *addr)
{
    if (list_match(allow, family, addr))
        return POLICY_ALLOW;
    return list_match(deny, family, addr) ? POLICY_DENY : POLICY_ALLOW;
}

/* The IPv4 address embedded in an IPv6 one, by the well-known forms; 0 if none. */
static int embedded_v4(const uint8_t *a6, uint8_t *v4)
{
    static const uint8_t zero[12];
    static const uint8_t nat64[12] = { 0x00, 0x64, 0xff, 0x9b };

    if (memcmp(a6, nat64, 12) == 0) { /* 64:ff9b::/96 */
        memcpy(v4, a6 + 12, 4);
        return 1;
    }
    if (a6[0] == 0x20 && a6[1] == 0x02) { /* 6to4 2002:AABB:CCDD::/48 */
        memcpy(v4, a6 + 2, 4);
        return 1;
    }
    if (memcmp(a6, zero, 12) == 0) { /* IPv4-compatible ::a.b.c.d */
        uint32_t w;
        memcpy(&w, a6 + 12, 4);
        if (ntohl(w) == 1) /* ::1 is IPv6 loopback */
            return 0;
        /* :: itself (unspecified, reaches this host like 0.0.0.0) is judged
         * as 0.0.0.0, which the default deny list covers. */
        memcpy(v4, a6 + 12, 4);
        return 1;
    }
    return 0;
}

/* Normalizes sa into family + bytes + port; IPv4-mapped becomes IPv4. */
static int sa_bytes(const struct sockaddr *sa, int *family, uint8_t *addr, uint16_t *port)
{
    static const uint8_t mapped[12] = { 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff };

    memset(addr, 0, 16);
    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)sa;
        memcpy(addr, &in->sin_addr, 4);
        *family = AF_INET;
        *port = ntohs(in->sin_port);
        return 1;
    }
    if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)sa;
        *port = ntohs(in6->sin6_port);
        if (memcmp(in6->sin6_addr.s6_addr, mapped, 12) == 0) {
            memcpy(addr, in6->sin6_addr.s6_addr + 12, 4);
            *family = AF_INET;
        } else {
            memcpy(addr, in6->sin6_addr.s6_addr, 16);
            *family = AF_INET6;
        }
        return 1;
    }
    return 0;
}

static int is_self(const struct self_addr *self, int family, const uint8_t *addr, uint16_t port)
{
    int sfam;
    uint8_t saddr[16];
    uint16_t sport;

    if (self == NULL || !sa_bytes((const struct sockaddr *)&self->listen, &sfam, saddr, &sport))
        return 0;
    if (port != sport)
        return 0;
    if (!self->wildcard)
        return sfam == family && memcmp(saddr, addr, family == AF_INET ? 4 : 16) == 0;
    /* Bound to every address: loopback and any local address reach us. */
    if (family == AF_INET && addr[0] == 127)
        return 1;
    if (family == AF_INET && memcmp(addr, "\0\0\0\0", 4) == 0)
        return 1;
    if (family == AF_INET6 && memcmp(addr, &in6addr_loopback, 16) == 0)
        return 1;
    if (family == AF_INET6 && memcmp(addr, &in6addr_any, 16) == 0)
        return 1;
    for (size_t i = 0; i < self->nlocal; i++) {
        if (self->local_family[i] == family &&
            memcmp(self->local[i], addr, family == AF_INET ? 4 : 16) == 0)
            return 1;
    }
    return 0;
}

enum policy_verdict policy_check(const struct cidr_list *allow, const struct cidr_list *deny,
                                 const struct self_addr *self, const struct sockaddr *sa)
{
    int family;
    uint8_t addr[16], v4[4];
    uint16_t port;

    if (!sa_bytes(sa, &family, addr, &port))
        return POLICY_DENY; /* only IP sockets are ever opened */
    if (is_self(self, family, addr, port))
        return POLICY_SELF;
    if (list_match(allow, family, addr))
        return POLICY_ALLOW; /* allow overrides deny, embedded forms too */
    if (list_match(deny, family, addr))
        return POLICY_DENY;
    if (family == AF_INET6 && embedded_v4(addr, v4)) {
        if (is_self(self, AF_INET, v4, port))
            return POLICY_SELF;
        if (judge(allow, deny, AF_INET, v4) == POLICY_DENY)
            return POLICY_DENY;
    }
    return POLICY_ALLOW;
}

fo_err self_addr_init(struct self_addr *self, const struct sockaddr *bound, socklen_t len)
{
    struct ifaddrs *ifa = NULL, *p;
    int family;
    uint8_t addr[16];
    uint16_t port;
    size_t n = 0;

    memset(self, 0, sizeof(*self));
    if (len > sizeof(self->listen))
        return FO_EINVAL;
    memcpy(&self->listen, bound, len);
    /* A unix socket has no IP address a URL could name: nothing to block
     * (is_self never matches it, as sa_bytes does not read it). */
    if (bound->sa_family == AF_UNIX)
        return FO_OK;
    if (!sa_bytes(bound, &family, addr, &port))
        return FO_EINVAL;
    self->wildcard = family == AF_INET ? memcmp(addr, "\0\0\0\0", 4) == 0
                                       : memcmp(addr, &in6addr_any, 16) == 0;
    if (!self->wildcard)
        return FO_OK;
    if (getifaddrs(&ifa) != 0) {
        log_warn("getifaddrs failed; only loopback counts as this host");
        return FO_OK;
    }
    for (p = ifa; p != NULL; p = p->ifa_next)
        n += p->ifa_addr != NULL &&
             (p->ifa_addr->sa_family == AF_INET || p->ifa_addr->sa_family == AF_INET6);
    self->local = calloc(n ? n : 1, sizeof(*self->local));
    self->local_family = calloc(n ? n : 1, sizeof(*self->local_family));
    if (self->local == NULL || self->local_family == NULL) {
        freeifaddrs(ifa);
        self_addr_free(self);
        return FO_ENOMEM;
    }
    for (p = ifa; p != NULL; p = p->ifa_next) {
        if (p->ifa_addr == NULL || !sa_bytes(p->ifa_addr, &family, addr, &port))
            continue;
        self->local_family[self->nlocal] = family;
        memcpy(self->local[self->nlocal++], addr, 16);
    }
    freeifaddrs(ifa);
    return FO_OK;
}

void self_addr_free(struct self_addr *self)
{
    FO_FREE(self->local);
    FO_FREE(self->local_family);
    self->nlocal = 0;
}
